"""``torchrun ... -m dropkit run``: DDP training whose records do not depend on the world size.

The digits MLP (gloo on the CPU): one process straight through 2 epochs (the oracle); one
process for epoch 1, then ``torchrun --nproc-per-node 2 ... --resume`` for epoch 2. The resumed
run's records equal the straight run's (float32: losses to 1e-5 relative, accuracies exactly),
rank 0 alone wrote the run folder, and no rank left its private folder behind.
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

SETTINGS = ["--set", "hidden=64", "--set", "mc_samples=2"]


def torchrun(procs: int, *args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}
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
            overrides=[s for s in SETTINGS if s != "--set"], report=False,
        )  # fmt: skip
    finally:
        distributed.shutdown()
        (tmp / "store").unlink(missing_ok=True)


def test_world_size_invariant_records_and_resume(tmp_path):
    private = tmp_path / "tmp"
    private.mkdir()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    in_process(straight, 2, tmp_path)  # the oracle: one process, 2 epochs
    in_process(resumed, 1, tmp_path)  # one process, epoch 1 ...
    # ... turned into an interrupted 2-epoch run, resumed on 2 ranks by the CLI
    for config in (resumed / "config.json", resumed / "p0.5-seed0" / "config.json"):
        data = json.loads(config.read_text())
        data["epochs"] = 2
        config.write_text(json.dumps(data))
    (resumed / "p0.5-seed0" / "summary.json").unlink()
    again = torchrun(2, "--out", str(resumed), "--resume", tmp=private)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("run folder:") == 1  # rank 0 alone reports

    a, b = records(straight), records(resumed)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_acc", "test_acc"):
            assert ra[key] == rb[key], key
        for key in ("train_loss", "train_eval_loss", "test_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
    assert sorted(p.name for p in resumed.iterdir()) == [
        "config.json", "curves.png", "p0.5-seed0", "reliability.png", "report.html", "report.md",
    ]  # fmt: skip
    # the other rank's private copy of the run folder is gone
    assert [p for p in private.iterdir() if p.name.startswith("dropkit-rank")] == []


def test_split_rows_is_tensor_split():
    from dropkit.experiments.distributed import split_rows

    for n, parts in ((7, 3), (2, 4), (32, 2), (5, 5)):
        sizes = [len(t) for t in torch.arange(n).tensor_split(parts)]
        assert split_rows(n, parts) == sizes

    assert split_rows(7, 3) == [3, 2, 2]
    assert split_rows(2, 4) == [1, 1, 0, 0]
