"""Run a recipe for each rate (and variant and seed) into a run folder, resumably.

:func:`run_recipe` writes ``config.json`` first, then trains the trials in order; each trial's
``summary.json`` marks it finished. With ``resume=True`` the saved configuration is used,
finished trials are skipped, and an unfinished one continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import random
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from .recipe import MAX_SEED, Recipe, TrialContext, apply_overrides, get_recipe
from .runs import TrialDir, read_json, write_json

__all__ = ["ResumeError", "default_out", "run_recipe", "versions"]


class ResumeError(ValueError):
    """A run folder that cannot be started or resumed as asked."""


def versions() -> dict[str, str]:
    """Versions of what produced a run (for its report)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"dropkit": __version__, "python": platform.python_version(),
             "torch": torch.__version__, "numpy": np.__version__}  # fmt: skip
    for name in ("numba", "scikit-learn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    # CPU results (float reductions, hence the last digits) depend on the thread count
    found["torch threads"] = str(torch.get_num_threads())
    return found


def default_out(recipe: str) -> Path:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>`` in the current directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{recipe}-{stamp}"


def _device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA GPU here; use cpu")
    return torch.device(name)


def _check_rates(rates: Sequence[float]) -> list[float]:
    if not rates:
        raise ValueError("give at least one dropout rate")
    for p in rates:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate p must be in [0, 1), got {p}")
    return [float(p) for p in rates]


def _fresh_config(recipe: Recipe, rates, seeds, epochs, device, overrides, variants,
                  command) -> dict[str, Any]:  # fmt: skip
    settings = apply_overrides(recipe.settings(), overrides)
    if variants is not None:
        unknown = sorted(set(variants) - set(recipe.variants or ()))
        if unknown:
            raise ValueError(
                f"unknown variant(s) {unknown} for {recipe.name}; it has: "
                f"{', '.join(recipe.variants) if recipe.variants else 'none'}"
            )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise ValueError(
            f"seeds must be one or more integers in [0, {MAX_SEED}], got {list(seeds)}"
        )
    # a repeated rate or seed would count one trial twice: a fake mean ± std over "n" trials
    for what, values in (("seeds", [int(s) for s in seeds]), ("rates", [float(p) for p in rates]),
                         ("variants", list(variants or ()))):  # fmt: skip
        if len(set(values)) != len(values):
            raise ValueError(f"{what} must be distinct, got {values}")
    return {
        "recipe": recipe.name, "summary": recipe.summary, "source": recipe.source,
        "data": recipe.data, "task": recipe.task, "rates": _check_rates(rates),
        "seeds": [int(s) for s in seeds], "variants": list(variants or recipe.variants or []),
        "epochs": int(epochs), "device": device, "settings": dataclasses.asdict(settings),
        "command": command, "versions": versions(),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "trials": recipe.trials(rates, seeds, variants),
        "columns": [list(c) for c in recipe.columns],
        "curves": [dict(c) for c in recipe.curves],
        "sweep_metric": list(recipe.sweep_metric), "notes": recipe.notes,
    }  # fmt: skip


def run_recipe(
    name: str,
    *,
    out: str | Path | None = None,
    rates: Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    epochs: int | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    variants: Sequence[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    data_path: str | None = None,
    command: str = "",
    on_trial: Callable[[dict[str, Any], dict[str, float]], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    report: bool = True,
) -> Path:
    """Run recipe ``name`` into ``out`` (a new folder unless ``resume``); the folder's path.

    ``on_trial(entry, summary)`` is called as each trial finishes; ``on_epoch(record)`` after
    each epoch record is written. Writes the report (:mod:`dropkit.experiments.report`) at the
    end when ``report``.
    """
    recipe = get_recipe(name)
    run_dir = Path(out) if out is not None else default_out(name)
    config_file = run_dir / "config.json"
    if resume:
        if not config_file.is_file():
            raise ResumeError(f"nothing to resume: {run_dir} holds no run (no config.json)")
        config = read_json(config_file)
        if config.get("recipe") != name:
            raise ResumeError(
                f"{run_dir} holds a run of recipe {config.get('recipe')!r}, not {name!r}"
            )
        config["device"] = device
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ResumeError(
                f"{run_dir} already exists and is not empty; pass --resume to continue the run "
                "in it, or choose another --out"
            )
        config = _fresh_config(
            recipe,
            recipe.default_rates if rates is None else rates,
            seeds,
            recipe.default_epochs if epochs is None else epochs,
            device, overrides, variants, command,
        )  # fmt: skip
    torch_device = _device(device)
    settings = recipe.settings(**config["settings"])  # validates a hand-edited file too
    created = not run_dir.exists() or not any(run_dir.iterdir())
    write_json(config_file, config)
    try:
        _run_trials(recipe, run_dir, config, settings, torch_device, resume, progress, data_path,
                    on_trial, on_epoch)  # fmt: skip
    except BaseException:
        # A run that failed before recording anything (missing data, bad settings) leaves
        # no folder behind, so the same command can simply be run again.
        if created and not any(f.stat().st_size for f in run_dir.rglob(TrialDir.METRICS)):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if report:
        from .report import write_report

        write_report(run_dir)
    return run_dir


def _run_trials(recipe, run_dir, config, settings, torch_device, resume, progress, data_path,
                on_trial, on_epoch) -> None:  # fmt: skip
    for entry in config["trials"]:
        trial = TrialDir(run_dir / entry["name"])
        summary = trial.summary()
        if summary is None:
            trial_config = {**entry, "epochs": config["epochs"], "settings": config["settings"]}
            write_json(trial.file(TrialDir.CONFIG), trial_config)
            random.seed(entry["seed"])
            torch.manual_seed(entry["seed"])
            ctx = TrialContext(trial=trial, p=entry["p"], seed=entry["seed"],
                               epochs=config["epochs"], settings=settings, device=torch_device,
                               variant=entry.get("variant"), progress=progress, resume=resume,
                               data_path=data_path, on_epoch=on_epoch)  # fmt: skip
            summary = recipe.train(ctx)
            trial.write_summary(summary)
        if on_trial is not None:
            on_trial(entry, summary)
