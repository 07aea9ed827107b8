"""Checkpoints hold data, never code: a crafted or damaged file is refused, and nothing runs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dropkit.experiments import run_recipe
from dropkit.experiments.runs import CheckpointError, TrialDir

DIGITS = ["n_train=120", "mc_samples=3", "hidden=32"]


class Payload:
    """Unpickling this creates ``marker``: the proof that a checkpoint ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _unfinished(tmp_path: Path, recipe: str) -> tuple[Path, TrialDir]:
    """A finished one-trial run whose summary is removed: resuming loads its checkpoint."""
    overrides = DIGITS if recipe == "digits-mlp" else []
    out = run_recipe(recipe, out=tmp_path / "run", rates=[0.5], epochs=2, overrides=overrides,
                     progress=False, report=False)  # fmt: skip
    trial = TrialDir(out / "p0.5-seed0")
    trial.file(TrialDir.SUMMARY).unlink()
    return out, trial


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_crafted_pickle_checkpoint_is_refused_without_running(tmp_path, writer):
    out, trial = _unfinished(tmp_path, "digits-mlp")
    marker = tmp_path / "pwned"
    checkpoint = trial.file(TrialDir.CHECKPOINT)
    state = {"epoch": 1, "model": Payload(marker)}
    if writer == "torch.save":
        torch.save(state, checkpoint)
    else:
        checkpoint.write_bytes(pickle.dumps(state))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: not a checkpoint written by"):
        run_recipe("digits-mlp", out=out, resume=True, progress=False, report=False)
    assert not marker.exists(), "unpickling the checkpoint ran code"
    assert checkpoint.exists(), "the refused file is left for the user to inspect"


def test_a_dropkit_checkpoint_resumes_and_a_foreign_dict_is_refused(tmp_path):
    out, trial = _unfinished(tmp_path, "digits-mlp")
    state = torch.load(trial.file(TrialDir.CHECKPOINT), weights_only=True)
    assert state["format"] == "dropkit-checkpoint-1"
    run_recipe("digits-mlp", out=out, resume=True, progress=False, report=False)
    assert trial.summary() is not None
    trial.file(TrialDir.SUMMARY).unlink()
    torch.save({"epoch": 1, "state_dict": {}}, trial.file(TrialDir.CHECKPOINT))  # not ours
    with pytest.raises(CheckpointError, match="no model, optimizer, schedulers, rng"):
        run_recipe("digits-mlp", out=out, resume=True, progress=False, report=False)


def test_a_checkpoint_of_an_earlier_version_without_the_tag_resumes(tmp_path):
    """Run folders of this version written before the format tag hold the same data."""
    out, trial = _unfinished(tmp_path, "digits-mlp")
    file = trial.file(TrialDir.CHECKPOINT)
    state = torch.load(file, weights_only=True)
    del state["format"]
    torch.save(state, file)
    run_recipe("digits-mlp", out=out, resume=True, progress=False, report=False)
    assert trial.summary() is not None


def test_a_truncated_checkpoint_ends_the_cli_with_one_line_naming_it(tmp_path):
    out, trial = _unfinished(tmp_path, "toy-mlp")
    file = trial.file("checkpoint.npz")
    file.write_bytes(file.read_bytes()[:200])
    done = subprocess.run([sys.executable, "-m", "dropkit", "run", "toy-mlp", "--out", str(out),
                           "--resume", "--no-progress"], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dropkit: error: ")
    assert str(file) in lines[0]


def test_toy_checkpoint_with_an_object_array_or_an_old_pickle_is_refused(tmp_path):
    out, trial = _unfinished(tmp_path, "toy-mlp")
    marker = tmp_path / "pwned"
    file = trial.file("checkpoint.npz")
    objects = np.empty(1, dtype=object)
    objects[0] = Payload(marker)
    with file.open("wb") as handle:
        np.savez(handle, epoch=np.array(1), generators=np.array("{}"), evil=objects)
    with pytest.raises(CheckpointError, match=r"checkpoint\.npz"):
        run_recipe("toy-mlp", out=out, resume=True, progress=False, report=False)
    assert not marker.exists()
    file.unlink()
    trial.file("checkpoint.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pkl: .*a pickle"):
        run_recipe("toy-mlp", out=out, resume=True, progress=False, report=False)
    assert not marker.exists()
