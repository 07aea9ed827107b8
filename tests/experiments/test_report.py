"""The run report is rebuilt from a run folder's files alone: tables, plots, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropkit.experiments.report import (
    Trial,
    format_markdown_table,
    load_run,
    summary_table,
    write_report,
)
from dropkit.experiments.report import _curve as mean_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOCKED = "p=0.25 <b>locked</b>"


def trial(
    name: str,
    p: float,
    seed: int,
    label: str,
    *,
    variant: str | None = None,
    accs: list[float] | None = None,
    summary: dict[str, Any] | None = None,
    predictions: bool = False,
    folder: bool = True,
) -> dict[str, Any]:
    """A trial for :func:`make_run`: its config entry plus what its folder should hold."""
    return {
        "entry": {"name": name, "p": p, "seed": seed, "variant": variant, "label": label},
        "accs": accs or [],
        "summary": summary,
        "predictions": predictions,
        "folder": folder,
    }


def make_run(root: Path, trials: list[dict[str, Any]], **config: Any) -> Path:
    """Write a run folder as the experiment runner does: config.json plus one folder per trial."""
    root.mkdir(parents=True, exist_ok=True)
    entries = [t["entry"] for t in trials]
    full = {
        "recipe": "mnist-mlp",
        "summary": "MLP on MNIST, dropout rates swept",
        "source": "seed 002; Srivastava et al. 2014",
        "data": "mnist",
        "task": "classification",
        "rates": sorted({e["p"] for e in entries}),
        "seeds": sorted({e["seed"] for e in entries}),
        "epochs": 3,
        "device": "cpu",
        "settings": {"lr": 0.01, "hidden": [512, 512]},
        "command": "dropkit run mnist-mlp --epochs 3",
        "versions": {"dropkit": "0.1.0", "torch": "2.4.0"},
        "created": "2025-01-01T00:00:00",
        "trials": entries,
        "columns": [["test_acc", "test acc"], ["test_loss", "test loss"]],
        "curves": [
            {"title": "loss", "ylabel": "loss", "keys": {"train_loss": "train"}, "log_y": True},
            {"title": "accuracy", "ylabel": "acc", "keys": {"train_acc": "train", "test_acc": ""}},
        ],
        "sweep_metric": ["test_acc", "test accuracy"],
        "notes": "Rates follow the paper.",
        **config,
    }
    (root / "config.json").write_text(json.dumps(full, indent=2))
    rng = np.random.default_rng(0)
    for t in trials:
        if not t["folder"]:
            continue
        folder = root / t["entry"]["name"]
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**t["entry"], "epochs": 3}))
        lines = [
            json.dumps({"epoch": i, "train_loss": 1.0 / i, "train_acc": a - 0.01, "test_acc": a})
            for i, a in enumerate(t["accs"], start=1)
        ]
        (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
        if t["summary"] is not None:
            (folder / "summary.json").write_text(json.dumps(t["summary"]))
        if t["predictions"]:
            probs = rng.dirichlet(np.ones(10), size=200)
            labels = rng.integers(0, 10, size=200)
            np.savez(folder / "predictions.npz", probs=probs, labels=labels)
    return root


def sweep_trials() -> list[dict[str, Any]]:
    """Two seeds each of p=0 and p=0.2, and a locked group that has not finished any seed."""
    return [
        trial(
            "p0-seed0",
            0.0,
            0,
            "p=0",
            accs=[0.8, 0.9],
            summary={"test_acc": 0.90, "test_loss": 0.30},
            predictions=True,
        ),
        trial(
            "p0-seed1",
            0.0,
            1,
            "p=0",
            accs=[0.82, 0.92, 0.93],
            summary={"test_acc": 0.92, "test_loss": 0.34},
            predictions=True,
        ),
        trial("p0.2-seed0", 0.2, 0, "p=0.2", accs=[0.9], summary={"test_acc": 0.95}),
        trial(
            "p0.2-seed1",
            0.2,
            1,
            "p=0.2",
            accs=[0.91],
            summary={"test_acc": 0.96, "test_loss": None},
        ),
        trial("p0.25-locked-seed0", 0.25, 0, LOCKED, variant="locked", accs=[0.5]),
        trial("p0.25-locked-seed1", 0.25, 1, LOCKED, variant="locked", folder=False),
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report of the sweep run, written once for the tests that only read it."""
    run_dir = make_run(tmp_path_factory.mktemp("report") / "run", sweep_trials())
    return write_report(run_dir)


def table_row(markdown: str, label: str) -> list[str]:
    """The cells of the results-table row whose first cell is ``label``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == label and len(cells) == 4:
            return cells
    raise AssertionError(f"no table row for {label!r} in:\n{markdown}")


def test_load_run_reads_trials_in_config_order(tmp_path):
    run = load_run(make_run(tmp_path / "run", sweep_trials()))
    assert [t.name for t in run.trials][:2] == ["p0-seed0", "p0-seed1"]
    first, *_, locked, missing = run.trials
    assert first.p == 0.0
    assert first.seed == 0
    assert first.variant is None
    assert [r["epoch"] for r in first.metrics] == [1, 2]
    assert first.summary == {"test_acc": 0.90, "test_loss": 0.30}
    assert first.predictions is not None
    assert first.predictions["probs"].shape == (200, 10)
    assert locked.variant == "locked"
    assert len(locked.metrics) == 1
    assert locked.summary is None
    # A trial listed in the config whose folder is missing is unfinished, not an error.
    assert (missing.metrics, missing.summary, missing.predictions) == ([], None, None)
    assert list(run.groups()) == ["p=0", "p=0.2", LOCKED]


def test_summary_table_gives_means_with_sample_std(tmp_path):
    headers, rows = summary_table(load_run(make_run(tmp_path / "run", sweep_trials())))
    assert headers == ["trial", "test acc", "test loss", "seeds"]
    # p=0: acc 0.90, 0.92 -> mean 0.91, std (ddof=1) 0.01414; loss 0.30, 0.34 -> 0.32 ± 0.02828
    assert rows[0] == ["p=0", "0.91 ± 0.01414", "0.32 ± 0.02828", "2"]
    # p=0.2: acc 0.95, 0.96; the loss is null in one summary and absent in the other
    assert rows[1] == ["p=0.2", "0.955 ± 0.007071", "—", "2"]
    assert rows[2] == [LOCKED, "unfinished", "unfinished", "0"]


def test_report_writes_every_file(report):
    names = {"curves.png", "reliability.png", "rates.png", "report.md", "report.html"}
    assert set(report) == names
    for name in names - {"report.md", "report.html"}:
        data = report[name].read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 5_000, name
    folder = report["report.md"].parent
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_markdown_holds_run_facts_table_and_images(report):
    md = report["report.md"].read_text(encoding="utf-8")
    assert md.startswith("# dropkit run: mnist-mlp\n")
    for text in (
        "MLP on MNIST, dropout rates swept",
        "**Source:** seed 002; Srivastava et al. 2014",
        "**Data:** mnist",
        "**Device:** cpu",
        "**Epochs:** 3",
        "**Seeds:** 0, 1",
        "```\ndropkit run mnist-mlp --epochs 3\n```",
        "| torch",
        "Rates follow the paper.",
        "![Training curves](curves.png)",
        "(reliability.png)",
        "(rates.png)",
        "### p0-seed1 (p=0, seed 1)",
    ):
        assert text in md, text
    assert table_row(md, "p=0") == ["p=0", "0.91 ± 0.01414", "0.32 ± 0.02828", "2"]
    assert table_row(md, LOCKED)[1:] == ["unfinished", "unfinished", "0"]
    assert "unfinished, 1 of 3 epochs recorded" in md
    assert "unfinished, no epoch recorded yet" in md
    assert "| test_loss | —     |" in md  # a null (non-finite) final value


def test_html_is_standalone_and_escaped(report):
    page = report["report.html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    assert "<table>" in page
    assert '<img src="curves.png"' in page
    assert "<td>0.91 ± 0.01414</td>" in page
    assert "&lt;b&gt;locked&lt;/b&gt;" in page
    assert "<b>" not in page


def test_rerun_rewrites_identical_markdown_and_html(report):
    before = {n: report[n].read_bytes() for n in ("report.md", "report.html")}
    again = write_report(report["report.md"].parent)
    assert {n: again[n].read_bytes() for n in before} == before


def test_single_rate_without_predictions_has_no_reliability_or_rates(tmp_path):
    trials = [
        trial("p0.5-seed0", 0.5, 0, "p=0.5", accs=[0.7, 0.8], summary={"test_acc": 0.8}),
        trial("p0.5-seed1", 0.5, 1, "p=0.5", accs=[0.7]),
    ]
    written = write_report(make_run(tmp_path / "run", trials, task="regression"))
    assert set(written) == {"curves.png", "report.md", "report.html"}
    assert not (tmp_path / "run" / "reliability.png").exists()
    assert not (tmp_path / "run" / "rates.png").exists()
    md = written["report.md"].read_text(encoding="utf-8")
    assert "reliability.png" not in md
    assert "rates.png" not in md
    # One finished seed of two: a plain mean, no std.
    assert table_row(md, "p=0.5") == ["p=0.5", "0.8", "—", "1"]


def test_curves_average_the_epochs_every_seed_has():
    metrics = [
        [{"epoch": 1, "a": 1.0}, {"epoch": 2, "a": 2.0}],
        [{"epoch": 1, "a": 3.0}, {"epoch": 2, "a": 4.0}, {"epoch": 3, "a": 5.0}],
        [{"epoch": 1, "b": 0.0}],  # has not logged "a" yet: left out, not an empty intersection
    ]
    seeds = [Trial(f"p0-seed{i}", 0.0, i, None, "p=0", m) for i, m in enumerate(metrics)]
    assert mean_curve(seeds, "a") == ([1.0, 2.0], [2.0, 3.0])


def test_not_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a dropkit run folder"):
        load_run(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"not a dropkit run folder \(no config.json\)"):
        write_report(tmp_path)


def test_corrupt_metrics_line_names_file_and_line(tmp_path):
    run_dir = make_run(tmp_path / "run", sweep_trials())
    metrics = run_dir / "p0.2-seed1" / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "test_acc": 0.9}\n{"epoch": 2, "test_acc": 0.\n')
    with pytest.raises(ValueError, match="line 2") as error:
        load_run(run_dir)
    assert str(metrics) in str(error.value)


def test_markdown_table_escapes_pipes_and_pads_rows():
    table = format_markdown_table(["a", "b"], [["x|y"], ["1", "two\nlines"]])
    assert table.splitlines() == [
        "| a    | b         |",
        "| ---- | --------- |",
        "| x\\|y |           |",
        "| 1    | two lines |",
    ]
