"""Run folders: the files an experiment leaves behind, written so that nothing is ever half-written.

A run is a folder::

    RUN_DIR/config.json                  what was run (recipe, rates, seeds, settings, versions)
    RUN_DIR/<trial>/config.json          one trial: a rate (and variant) with a seed
    RUN_DIR/<trial>/metrics.jsonl        one JSON object per epoch
    RUN_DIR/<trial>/checkpoint.pt        model, optimiser and RNG states after the last epoch
                                         (data only: loaded with weights_only=True)
    RUN_DIR/<trial>/summary.json         final metrics (written when the trial is done)
    RUN_DIR/<trial>/predictions.npz      MC-mean probabilities and labels (classification)
    RUN_DIR/report.md, report.html, *.png

Every file is written to a temporary name in the same folder and renamed over the target
(``os.replace`` is atomic on POSIX and Windows), so a run killed at any instant leaves either the
old or the new version of each file, never a torn one. ``metrics.jsonl`` is rewritten whole on
each append for the same reason (it holds one short line per epoch).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dropkit._atomic import write_atomic

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrialDir",
    "check_checkpoint",
    "rate_text",
    "read_json",
    "read_jsonl",
    "trial_label",
    "trial_name",
    "write_atomic",
    "write_json",
]


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null so every file parses with any JSON reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (non-finite floats become null)."""
    text = json.dumps(_clean(data), indent=2, sort_keys=False) + "\n"
    return write_atomic(path, lambda h: h.write(text), mode="w")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a ValueError names the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (``[]`` when it does not exist)."""
    file = Path(path)
    if not file.is_file():
        return []
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}, line {number}: not valid JSON ({error})") from error
        if not isinstance(record, dict):
            raise ValueError(f"{file}, line {number}: expected a JSON object, got {record!r}")
        records.append(record)
    return records


def rate_text(p: float) -> str:
    """``p`` in as few digits as name it exactly: ``0.5``, ``0``, ``0.1234567`` (``%g`` would
    give ``0.123457`` for both 0.1234567 and 0.1234568, merging two trials into one)."""
    short = f"{p:g}"
    return short if float(short) == p else repr(float(p))


def trial_label(p: float, variant: str | None = None) -> str:
    """How a trial is named in tables and legends, e.g. ``p=0.2`` or ``p=0.25 locked``."""
    return f"p={rate_text(p)}" + (f" {variant}" if variant else "")


def trial_name(p: float, seed: int, variant: str | None = None) -> str:
    """Folder name of a trial, e.g. ``p0.2-seed0`` or ``p0.25-locked-seed1``."""
    middle = f"-{variant}" if variant else ""
    return f"p{rate_text(p)}{middle}-seed{seed}"


class TrialDir:
    """The folder of one trial and the operations on its files.

    ``metrics.jsonl`` lines each carry an integer ``"epoch"``; :meth:`truncate` drops the lines
    after the last checkpointed epoch so that a resumed trial rewrites them exactly once.
    """

    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.pt"
    SUMMARY = "summary.json"
    PREDICTIONS = "predictions.npz"
    CONFIG = "config.json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def metrics(self) -> list[dict[str, Any]]:
        """Every epoch record written so far."""
        return read_jsonl(self.file(self.METRICS))

    def write_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(_clean(r)) + "\n" for r in records)
        write_atomic(self.file(self.METRICS), lambda h: h.write(lines), mode="w")

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Add one epoch's record (rewriting the file atomically)."""
        self.write_metrics([*self.metrics(), record])

    def truncate(self, last_epoch: int) -> None:
        """Keep only the records of epochs ``<= last_epoch``."""
        records = self.metrics()
        kept = [r for r in records if int(r["epoch"]) <= last_epoch]
        if len(kept) != len(records):
            self.write_metrics(kept)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` (tensors, numbers, strings, lists and dicts only) with a format tag."""
        import torch

        tagged = {"format": CHECKPOINT_FORMAT, **state}
        write_atomic(self.file(self.CHECKPOINT), lambda h: torch.save(tagged, h))

    def load_checkpoint(self, keys: Iterable[str] = ()) -> dict[str, Any] | None:
        """The saved state, or None when there is none yet.

        Loaded with ``torch.load(weights_only=True)``: a file holds data, never code, so a
        tampered checkpoint cannot run anything. A file that is not a checkpoint dropkit wrote
        (another program's, truncated, or lacking one of ``keys``) raises
        :class:`CheckpointError` naming it.
        """
        import torch

        file = self.file(self.CHECKPOINT)
        if not file.is_file():
            return None
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, not a zip, or a pickle asking for code
            raise CheckpointError(file, type(error).__name__) from None
        return check_checkpoint(file, state, keys)

    def summary(self) -> dict[str, Any] | None:
        file = self.file(self.SUMMARY)
        return read_json(file) if file.is_file() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file(self.SUMMARY), summary)

    def save_predictions(self, **arrays: Any) -> None:
        import numpy as np

        write_atomic(self.file(self.PREDICTIONS), lambda h: np.savez_compressed(h, **arrays))


#: Tag stored in every checkpoint dropkit writes (files of earlier versions have none).
CHECKPOINT_FORMAT = "dropkit-checkpoint-1"


class CheckpointError(ValueError):
    """A file in a checkpoint's place that dropkit did not write (or that was damaged)."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(
            f"{file}: not a checkpoint written by dropkit ({reason}); nothing in it was run. "
            "Delete the file to restart this trial from its first epoch."
        )
        self.file = file


def check_checkpoint(file: Path, state: Any, keys: Iterable[str]) -> dict[str, Any]:
    """``state`` when it is a dict holding ``keys`` and a non-negative integer ``epoch``."""
    if not isinstance(state, dict):
        raise CheckpointError(file, f"holds a {type(state).__name__}, not a dict")
    tag = state.pop("format", CHECKPOINT_FORMAT)
    if tag != CHECKPOINT_FORMAT:
        raise CheckpointError(file, f"format {tag!r}")
    missing = [k for k in ("epoch", *keys) if k not in state]
    if missing:
        raise CheckpointError(file, f"no {', '.join(missing)}")
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(file, f"epoch {epoch!r}")
    return state
