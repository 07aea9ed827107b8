"""Rebuild a run's report (Markdown, HTML and PNG plots) from the files of its run folder alone.

A run folder, as the experiment runner writes it::

    RUN_DIR/config.json              the run: recipe, rates, seeds, trials, table and plot layout
    RUN_DIR/<trial>/config.json      the trial's entry of ``trials`` plus "epochs" and "settings"
    RUN_DIR/<trial>/metrics.jsonl    one JSON object per epoch, e.g. {"epoch": 1, "test_acc": 0.9}
    RUN_DIR/<trial>/summary.json     final metrics, a flat dict (absent until the trial finishes)
    RUN_DIR/<trial>/predictions.npz  optional: "probs" (N, K) MC-mean probabilities, "labels" (N,)

:func:`write_report` adds ``report.md``, ``report.html``, ``curves.png`` and, when the data
allow them, ``reliability.png`` and ``rates.png``. Everything shown comes from those files and
the run's ``config.json`` says what to show (table columns, curves, sweep metric), so the same
code serves classification, language-model, regression and toy runs, and a report can be rebuilt
at any time (also while trials are still running, or after a crash) without rerunning anything.
The output depends on the files only, so rebuilding from unchanged files gives identical
Markdown and HTML.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dropkit._atomic import write_atomic
from dropkit.metrics._optional import require

from .runs import read_json, read_jsonl, trial_label

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a plot is drawn
    from matplotlib.figure import Figure

__all__ = [
    "Run",
    "Trial",
    "format_markdown_table",
    "load_run",
    "summary_table",
    "write_report",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PREDICTIONS = "predictions.npz"

MISSING = "—"
UNFINISHED = "unfinished"
# First metrics key of a curve dashed, second solid (train vs test reads at a glance), then more.
LINE_STYLES = ("--", "-", ":", "-.")
# Fixed DPI: the PNGs look the same whatever matplotlibrc the reader has.
DPI = 100


@dataclass
class Trial:
    """One trial of a run: a dropout rate ``p`` (and ``variant``) trained with one ``seed``.

    Attributes:
        name: folder name inside the run folder, e.g. ``"p0.2-seed1"``.
        p: dropout rate.
        seed: random seed.
        variant: dropout variant (e.g. ``"locked"``), None for the recipe's plain dropout.
        label: display name, shared by all seeds of a (variant, p) group, e.g. ``"p=0.2"``.
        metrics: one dict per recorded epoch, in file order (empty before the first epoch).
        summary: final metrics, None while the trial is unfinished.
        predictions: arrays of ``predictions.npz`` (``"probs"`` (N, K), ``"labels"`` (N,)),
            None when the trial saved none.
    """

    name: str
    p: float
    seed: int
    variant: str | None
    label: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    predictions: dict[str, np.ndarray] | None = None

    @property
    def finished(self) -> bool:
        """True once the trial wrote its ``summary.json``."""
        return self.summary is not None


@dataclass
class Run:
    """A run folder read into memory: its ``config.json`` and its trials in config order."""

    path: Path
    config: dict[str, Any]
    trials: list[Trial]

    def groups(self) -> dict[str, list[Trial]]:
        """Trials grouped by label, groups in the order their first trial appears in config."""
        groups: dict[str, list[Trial]] = {}
        for trial in self.trials:
            groups.setdefault(trial.label, []).append(trial)
        return groups


# --------------------------------------------------------------------------------------------
# Reading a run folder


def _trial_from_entry(run_dir: Path, entry: Any, index: int) -> Trial:
    where = f"{run_dir / CONFIG}, trials[{index}]"
    if not isinstance(entry, dict) or "name" not in entry or "p" not in entry:
        raise ValueError(f"{where}: expected an object with at least 'name' and 'p', got {entry!r}")
    name = str(entry["name"])
    # A name is one folder inside the run: "../x" or "a/b" would read files outside of it.
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{where}: trial name {name!r} is not a plain folder name")
    p = float(entry["p"])
    variant = entry.get("variant")
    variant = None if variant is None else str(variant)
    label = entry.get("label") or trial_label(p, variant)
    trial = Trial(name, p, int(entry.get("seed", 0)), variant, str(label))

    folder = run_dir / name
    if not folder.is_dir():  # not started yet: an unfinished trial, not an error
        return trial
    trial.metrics = read_jsonl(folder / METRICS)
    if (folder / SUMMARY).is_file():
        summary = read_json(folder / SUMMARY)
        if not isinstance(summary, dict):
            raise ValueError(f"{folder / SUMMARY}: expected a JSON object, got {summary!r}")
        trial.summary = summary
    if (folder / PREDICTIONS).is_file():
        with np.load(folder / PREDICTIONS, allow_pickle=False) as npz:
            trial.predictions = {key: npz[key] for key in npz.files}
    return trial


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a run folder: the run's ``config.json`` and every trial it lists.

    Trials come in the order of the config's ``"trials"`` list. A listed trial whose folder
    does not exist yet is returned unfinished (no metrics, no summary), as is one without a
    ``summary.json``; trial folders not listed in the config are ignored.

    Raises:
        FileNotFoundError: ``run_dir`` is missing or holds no ``config.json``.
        ValueError: a JSON file does not parse (a ``metrics.jsonl`` error names the line) or
            a trial entry has no ``name``/``p``.
    """
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(
            f"{path} is not a dropkit run folder (no {CONFIG}); pass the folder an experiment "
            "run wrote, the one holding config.json and one subfolder per trial"
        )
    config = read_json(path / CONFIG)
    if not isinstance(config, dict):
        raise ValueError(f"{path / CONFIG}: expected a JSON object, got {type(config).__name__}")
    entries = config.get("trials") or []
    trials = [_trial_from_entry(path, entry, i) for i, entry in enumerate(entries)]
    return Run(path, config, trials)


# --------------------------------------------------------------------------------------------
# Results table


def _number(value: Any) -> float | None:
    """A metric value as a float; None for a missing or non-numeric one (null, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    return mean, (float(array.std(ddof=1)) if array.size >= 2 else None)


def _cell(values: Sequence[float]) -> str:
    if not values:
        return MISSING
    mean, std = _mean_std(values)
    return _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}"


def _columns(run: Run) -> list[tuple[str, str]]:
    """The configured ``[summary_key, header]`` pairs; without any, every summary key seen."""
    configured = run.config.get("columns")
    if configured:
        return [(str(key), str(header)) for key, header in configured]
    keys: dict[str, None] = {}  # insertion-ordered set: deterministic column order
    for trial in run.trials:
        keys.update(dict.fromkeys(trial.summary or {}))
    return [(key, key) for key in keys]


def summary_table(run: Run) -> tuple[list[str], list[list[str]]]:
    """The results table: one row per label group, in config order.

    Columns: ``"trial"`` (the label), one per configured ``columns`` entry, then ``"seeds"``
    (the number of finished seeds). A cell is the mean over the group's finished seeds with 4
    significant digits, followed by ``"± std"`` (sample std, ddof=1) when at least two seeds
    have the value; ``"—"`` when no finished seed has it, and ``"unfinished"`` in every value
    cell of a group with no finished seed.

    Returns:
        ``(headers, rows)``: a list of column headers and a list of rows of cell strings.
    """
    columns = _columns(run)
    headers = ["trial", *(header for _, header in columns), "seeds"]
    rows = []
    for label, trials in run.groups().items():
        finished = [t for t in trials if t.summary is not None]
        if not finished:
            rows.append([label, *[UNFINISHED] * len(columns), "0"])
            continue
        cells = []
        for key, _ in columns:
            values = [_number(t.summary.get(key)) for t in finished if t.summary is not None]
            cells.append(_cell([v for v in values if v is not None]))
        rows.append([label, *cells, str(len(finished))])
    return headers, rows


def _md_cell(text: str) -> str:
    # A "|" would split the cell and a newline would end the table row.
    return " ".join(str(text).split("\n")).replace("|", "\\|")


def format_markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded to a common width.

    Pipes inside cells are escaped and newlines become spaces; short rows are padded with
    empty cells. The result ends without a newline.

    Example:
        >>> print(format_markdown_table(["trial", "acc"], [["p=0.2", "0.9 ± 0.01"], ["a|b", ""]]))
        | trial | acc        |
        | ----- | ---------- |
        | p=0.2 | 0.9 ± 0.01 |
        | a\\|b  |            |
    """
    head = [_md_cell(h) for h in headers]
    body = [[_md_cell(c) for c in row] for row in rows]
    n = max([len(head), *(len(row) for row in body)])
    head += [""] * (n - len(head))
    body = [row + [""] * (n - len(row)) for row in body]
    widths = [max([3, *(len(row[i]) for row in [head, *body])]) for i in range(n)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in body)])


# --------------------------------------------------------------------------------------------
# Plots (matplotlib Figures made directly, never pyplot: no global backend or figure state)


def _plot_text(text: str) -> str:
    # Matplotlib reads "$...$" as mathtext; a label is shown as written.
    return text.replace("$", r"\$")


def _curve(trials: Sequence[Trial], key: str) -> tuple[list[float], list[float]]:
    """Mean of ``key`` over the seeds that recorded it, at the epochs all of them have."""
    series = []
    for trial in trials:
        points = {}
        for i, record in enumerate(trial.metrics, start=1):
            value = _number(record.get(key))
            epoch = _number(record.get("epoch"))
            if value is not None:
                points[float(i) if epoch is None else epoch] = value
        if points:  # a seed that has not logged this key yet must not empty the intersection
            series.append(points)
    if not series:
        return [], []
    common = sorted(set.intersection(*(set(points) for points in series)))
    return common, [float(np.mean([points[x] for points in series])) for x in common]


def _curves_figure(run: Run) -> Figure | None:
    specs = run.config.get("curves") or []
    if not specs:
        return None
    # deferred: importing the report module needs no matplotlib
    Figure = require("matplotlib.figure", "the report's plots").Figure
    from matplotlib.ticker import MaxNLocator

    ncols = min(len(specs), 2)
    nrows = math.ceil(len(specs) / ncols)
    fig = Figure(figsize=(6.4 * ncols, 4.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    groups = run.groups()
    drawn = False
    for ax, spec in zip(axes, specs, strict=False):
        positive = False
        for colour, (label, trials) in enumerate(groups.items()):
            for style, (key, suffix) in enumerate(dict(spec.get("keys") or {}).items()):
                x, y = _curve(trials, key)
                if not x:
                    continue
                name = f"{label} {suffix}".strip()
                ax.plot(
                    x,
                    y,
                    color=f"C{colour % 10}",
                    linestyle=LINE_STYLES[style % len(LINE_STYLES)],
                    marker="o" if len(x) == 1 else None,  # a lone epoch is a point, not a line
                    label=_plot_text(name),
                )
                positive = positive or any(v > 0 for v in y)
                drawn = True
        ax.set_title(_plot_text(str(spec.get("title", ""))))
        ax.set_xlabel(_plot_text(str(spec.get("xlabel", "epoch"))))
        ax.set_ylabel(_plot_text(str(spec.get("ylabel", ""))))
        # A log axis over no positive value makes matplotlib warn and draw nothing useful.
        if spec.get("log_y") and positive:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize="small")
            if all(float(x).is_integer() for line in ax.lines for x in line.get_xdata()):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.5" ticks
        ax.grid(alpha=0.3)
    for ax in axes[len(specs) :]:
        ax.set_axis_off()
    return fig if drawn else None


def _predictions_of(trials: Sequence[Trial]) -> tuple[np.ndarray, np.ndarray] | None:
    """Probs and labels of the first finished seed with predictions (any seed if none is)."""
    with_predictions = [
        t for t in trials if t.predictions and {"probs", "labels"} <= set(t.predictions)
    ]
    finished = [t for t in with_predictions if t.finished]
    chosen = (finished or with_predictions or [None])[0]
    if chosen is None or chosen.predictions is None:
        return None
    return chosen.predictions["probs"], chosen.predictions["labels"]


def _reliability_figure(run: Run, n_bins: int = 15) -> Figure | None:
    from dropkit.metrics.calibration import reliability_diagram

    curves = []
    for label, trials in run.groups().items():
        predictions = _predictions_of(trials)
        if predictions is not None:
            curves.append((label, reliability_diagram(*predictions, n_bins)))
    if not curves:
        return None
    Figure = require("matplotlib.figure", "the report's plots").Figure
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    for colour, (label, diagram) in enumerate(curves):
        full = diagram.counts > 0  # empty bins have no accuracy to draw
        ax.plot(
            diagram.confidence[full],
            diagram.accuracy[full],
            marker="o",
            color=f"C{colour % 10}",
            label=_plot_text(f"{label} (ECE {diagram.ece:.4f})"),
        )
    binary = curves[0][1].kind == "binary"
    ax.set_xlabel("predicted probability of class 1" if binary else "confidence (max prob)")
    ax.set_ylabel("fraction of positives" if binary else "accuracy")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"reliability ({n_bins} bins, first finished seed)")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _rates_figure(run: Run) -> Figure | None:
    sweep = run.config.get("sweep_metric")
    if not sweep or len({t.p for t in run.trials}) < 2:
        return None
    key, axis_label = str(sweep[0]), str(sweep[1] if len(sweep) > 1 else sweep[0])
    # variant -> p -> values over finished seeds; dicts keep the config order of appearance
    lines: dict[str | None, dict[float, list[float]]] = {}
    for trial in run.trials:
        value = _number((trial.summary or {}).get(key))
        points = lines.setdefault(trial.variant, {})
        if value is not None:
            points.setdefault(trial.p, []).append(value)
    if not any(points for points in lines.values()):
        return None
    Figure = require("matplotlib.figure", "the report's plots").Figure
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for colour, (variant, points) in enumerate(lines.items()):
        if not points:
            continue
        rates = sorted(points)
        stats = [_mean_std(points[p]) for p in rates]
        ax.errorbar(
            rates,
            [mean for mean, _ in stats],
            yerr=[0.0 if std is None else std for _, std in stats],
            marker="o",
            capsize=3,
            color=f"C{colour % 10}",
            label=_plot_text(variant or "standard"),
        )
    ax.set_xlabel("dropout rate p")
    ax.set_ylabel(_plot_text(axis_label))
    ax.set_title(_plot_text(f"{axis_label} against p (mean ± std over seeds)"))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Markdown and HTML


@dataclass(frozen=True)
class _Image:
    file: str
    title: str


IMAGES = (
    ("curves.png", "Training curves", _curves_figure),
    ("reliability.png", "Reliability diagram", _reliability_figure),
    ("rates.png", "Sweep over the dropout rate", _rates_figure),
)


def _value_text(value: Any) -> str:
    if value is None:  # the runner writes a NaN/inf metric as null
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _fmt(value, 6)
    return json.dumps(value, sort_keys=True)


def _facts(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The one-line facts of the run, (name, text), those the config has."""
    facts = []
    for key, name in (
        ("source", "Source"),
        ("data", "Data"),
        ("task", "Task"),
        ("device", "Device"),
        ("epochs", "Epochs"),
        ("rates", "Rates"),
        ("seeds", "Seeds"),
        ("created", "Created"),
    ):
        value = config.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, list):
            text = ", ".join(_value_text(v) for v in value)
        else:
            text = _value_text(value)
        facts.append((name, text))
    return facts


def _trial_status(trial: Trial, epochs: Any) -> str:
    recorded = len(trial.metrics)
    total = f" of {epochs}" if isinstance(epochs, int) else ""
    if trial.finished:
        return f"finished, {recorded}{total} epochs recorded"
    if recorded == 0:
        return "unfinished, no epoch recorded yet"
    return f"unfinished, {recorded}{total} epochs recorded"


def _trial_heading(trial: Trial) -> str:
    return f"{trial.name} ({trial.label}, seed {trial.seed})"


def _summary_rows(trial: Trial) -> list[list[str]]:
    return [[str(key), _value_text(value)] for key, value in (trial.summary or {}).items()]


def _settings_rows(config: dict[str, Any], key: str) -> list[list[str]]:
    mapping = config.get(key) or {}
    return [[str(k), _value_text(v)] for k, v in mapping.items()]


def _markdown(run: Run, images: Sequence[_Image]) -> str:
    config = run.config
    out = [f"# dropkit run: {config.get('recipe', run.path.name)}", ""]
    if config.get("summary"):
        out += [str(config["summary"]), ""]
    facts = _facts(config)
    if facts:
        out += [*(f"- **{name}:** {text}" for name, text in facts), ""]
    if config.get("command"):
        # A fence longer than any backtick run inside keeps the command verbatim.
        fence = "`" * max(3, _longest_run(str(config["command"]), "`") + 1)
        out += ["## Command", "", fence, str(config["command"]), fence, ""]
    for key, title, header in (("settings", "Settings", "setting"), ("versions", "Versions", "")):
        rows = _settings_rows(config, key)
        if rows:
            headers = [header or "package", "value" if header else "version"]
            out += [f"## {title}", "", format_markdown_table(headers, rows), ""]
    out += ["## Results", "", format_markdown_table(*summary_table(run)), ""]
    if config.get("notes"):
        out += [str(config["notes"]), ""]
    if images:
        out += ["## Plots", ""]
        for image in images:
            out += [f"### {image.title}", "", f"![{image.title}]({image.file})", ""]
    if run.trials:
        out += ["## Trials", ""]
        epochs = config.get("epochs")
        for trial in run.trials:
            out += [f"### {_trial_heading(trial)}", "", _trial_status(trial, epochs), ""]
            rows = _summary_rows(trial)
            if rows:
                out += [format_markdown_table(["metric", "value"], rows), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _longest_run(text: str, char: str) -> int:
    longest = current = 0
    for c in text:
        current = current + 1 if c == char else 0
        longest = max(longest, current)
    return longest


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; }
th { background: #f3f3f3; }
tbody tr:nth-child(even) { background: #fafafa; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #eee; }
ul.facts { list-style: none; padding-left: 0; }
.notes { white-space: pre-wrap; }
""".strip()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _html(run: Run, images: Sequence[_Image]) -> str:
    config = run.config
    title = f"dropkit run: {config.get('recipe', run.path.name)}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{STYLE}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if config.get("summary"):
        out.append(f"<p>{_e(config['summary'])}</p>")
    facts = _facts(config)
    if facts:
        out.append('<ul class="facts">')
        out += [f"<li><strong>{_e(name)}:</strong> {_e(text)}</li>" for name, text in facts]
        out.append("</ul>")
    if config.get("command"):
        out += ["<h2>Command</h2>", f"<pre><code>{_e(config['command'])}</code></pre>"]
    for key, title_, header in (("settings", "Settings", "setting"), ("versions", "Versions", "")):
        rows = _settings_rows(config, key)
        if rows:
            headers = [header or "package", "value" if header else "version"]
            out += [f"<h2>{title_}</h2>", _html_table(headers, rows)]
    out += ["<h2>Results</h2>", _html_table(*summary_table(run))]
    if config.get("notes"):
        out.append(f'<p class="notes">{_e(config["notes"])}</p>')
    if images:
        out.append("<h2>Plots</h2>")
        for image in images:
            out += [
                f"<h3>{_e(image.title)}</h3>",
                f'<p><img src="{_e(image.file)}" alt="{_e(image.title)}"></p>',
            ]
    if run.trials:
        out.append("<h2>Trials</h2>")
        epochs = config.get("epochs")
        for trial in run.trials:
            out += [
                f"<h3>{_e(_trial_heading(trial))}</h3>",
                f"<p>{_e(_trial_status(trial, epochs))}</p>",
            ]
            rows = _summary_rows(trial)
            if rows:
                out.append(_html_table(["metric", "value"], rows))
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Writing


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    write_atomic(path, lambda handle: handle.write(data))


def write_report(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the report of a run folder into it, from its files alone.

    Writes ``curves.png`` (one panel per ``curves`` entry of the config; when no trial has
    logged any of the keys yet, it is skipped), ``reliability.png`` (only when a trial saved
    ``predictions.npz``), ``rates.png`` (only with at least two distinct rates, a
    ``sweep_metric`` and a finished trial), then ``report.md`` and ``report.html`` linking the
    images written. Every file is replaced atomically. Markdown and HTML depend on the files
    only, so a rerun on unchanged files rewrites them byte for byte.

    Returns:
        File name -> path of every file written, e.g. ``{"curves.png": ..., "report.md": ...}``.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_run`.
    """
    run = load_run(run_dir)
    written: dict[str, Path] = {}
    images = []
    for file, title, draw in IMAGES:
        fig = draw(run)
        if fig is None:
            continue
        path = run.path / file
        write_atomic(path, lambda handle, fig=fig: fig.savefig(handle, format="png", dpi=DPI))
        written[file] = path
        images.append(_Image(file, title))
    for file, render in (("report.md", _markdown), ("report.html", _html)):
        path = run.path / file
        _write_text(path, render(run, images))
        written[file] = path
    return written
