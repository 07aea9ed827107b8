"""``torchrun ... -m dropkit run``: DDP training whose records do not depend on the world size.

The digits MLP (gloo on the CPU): one process straight through 2 epochs (the oracle); then
``torchrun --nproc-per-node 2`` with rank 1 failing in epoch 2 (both ranks end with a one-line
error, the folder holds epoch 1 whole), and ``--resume`` on 2 processes. The resumed run's
records equal the oracle's (float32: losses to 1e-5 relative, accuracies exactly), rank 0
alone wrote the run folder, and no rank left its private folder behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

SETTINGS = ["--set", "hidden=64", "mc_samples=2"]


#: Imported by every process started with PYTHONPATH=<its folder>: on rank 1, the optimizer
#: step number $DROPKIT_TEST_FAIL raises, as a crash of that process would.
FAILING_RANK = """
import os
if os.environ.get("RANK") == "1" and os.environ.get("DROPKIT_TEST_FAIL"):
    import torch.optim
    _step, _calls = torch.optim.Adam.step, [0]

    def step(self, *args, **kwargs):
        _calls[0] += 1
        if _calls[0] == int(os.environ["DROPKIT_TEST_FAIL"]):
            raise ValueError("injected failure on rank 1")
        return _step(self, *args, **kwargs)

    torch.optim.Adam.step = step
"""


def torchrun(procs: int, *args: str, tmp: Path, fail_at: int = 0) -> subprocess.CompletedProcess:
    inject = tmp / "inject"
    inject.mkdir(exist_ok=True)
    (inject / "sitecustomize.py").write_text(FAILING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), "PYTHONPATH": str(inject),
           "DROPKIT_TEST_FAIL": str(fail_at or "")}  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={procs}", "-m", "dropkit", "run", "digits-mlp", "--p", "0.5",
           "--no-progress", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def records(run: Path) -> list[dict]:
    lines = (run / "p0.5-seed0" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def in_process(out: Path, epochs: int, tmp: Path, resume: bool = False) -> Path:
    """The same recipe through the trainer's DDP path on a one-process gloo group, in this
    process (what ``torchrun --nproc-per-node 1`` runs, without the start-up)."""
    import torch.distributed as dist

    from dropkit.experiments import distributed
    from dropkit.experiments.runner import run_recipe

    dist.init_process_group("gloo", init_method=f"file://{tmp / 'store'}", rank=0, world_size=1)
    distributed._world = distributed.World(0, 1, 0)
    try:
        return run_recipe(
            "digits-mlp", out=out, rates=[0.5], epochs=epochs, resume=resume, progress=False,
            overrides=SETTINGS[1:], report=False,
        )  # fmt: skip
    finally:
        distributed.shutdown()
        (tmp / "store").unlink(missing_ok=True)


def test_world_size_invariance_failure_and_resume(tmp_path):
    private = tmp_path / "tmp"
    private.mkdir()
    straight, run = tmp_path / "straight", tmp_path / "run"
    in_process(straight, 2, tmp_path)  # the oracle: one process, 2 epochs

    # 2 processes; rank 1 fails at step 3 of epoch 2 (29 steps an epoch)
    failed = torchrun(2, "--epochs", "2", "--out", str(run), *SETTINGS, tmp=private, fail_at=32)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("dropkit: error")]
    assert "dropkit: error: injected failure on rank 1" in errors, failed.stderr[-3000:]
    assert any(e.startswith("dropkit: error: rank 0 of 2: ") for e in errors), errors
    assert [r["epoch"] for r in records(run)] == [1]  # whole files: epoch 1 and its checkpoint
    json.loads((run / "p0.5-seed0" / "config.json").read_text())

    again = torchrun(2, "--out", str(run), "--resume", tmp=private)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("run folder:") == 1  # rank 0 alone reports

    a, b = records(straight), records(run)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_acc", "test_acc"):
            assert ra[key] == rb[key], key
        for key in ("train_loss", "train_eval_loss", "test_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json", "curves.png", "p0.5-seed0", "reliability.png", "report.html", "report.md",
    ]  # fmt: skip
    # the other rank's private copies of the run folder are gone, after the failure too
    assert [p for p in private.iterdir() if p.name.startswith("dropkit-rank")] == []


def test_split_rows_is_tensor_split():
    from dropkit.experiments.distributed import split_rows

    for n, parts in ((7, 3), (2, 4), (32, 2), (5, 5)):
        sizes = [len(t) for t in torch.arange(n).tensor_split(parts)]
        assert split_rows(n, parts) == sizes

    assert split_rows(7, 3) == [3, 2, 2]
    assert split_rows(2, 4) == [1, 1, 0, 0]
