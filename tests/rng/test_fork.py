"""dropkit in forked processes after the parent has run its threaded kernels.

numba's GNU-OpenMP pool kills a forked child at its first parallel region; dropkit's kernels
must keep working there (serial twin), give the masks of an unforked process for the same seed
and offset, and differ across DataLoader workers (each worker's torch generator is seeded apart).
"""

from __future__ import annotations

import multiprocessing as mp
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import dropkit.functional as F
from dropkit.rng import cpu, ops, philox, threads

pytestmark = [
    pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba"),
    pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is tested on Linux"),
]
P = 0.5
#: The serial/parallel switch is lowered for these tests (see ``small_serial_max``), so that
#: LARGE runs the parallel twins while torch's own fills stay single-threaded: torch's GNU
#: OpenMP pool, like numba's, hangs a forked child that reuses it.
SERIAL_MAX = 1 << 13
SMALL, LARGE = 64, 4 * SERIAL_MAX


@pytest.fixture(autouse=True)
def small_serial_max(monkeypatch):
    monkeypatch.setattr(threads, "SERIAL_MAX", SERIAL_MAX)


def _run_every_kernel(seed: int, offset: int, n: int) -> dict[str, torch.Tensor]:
    x = torch.ones(n, dtype=torch.float64)
    bias = torch.zeros(8, dtype=torch.float64)
    res = torch.zeros(n // 8, 8, dtype=torch.float64)
    return {
        "dropout": F.dropout(x, P, training=True, seed=seed, offset=offset),
        "words": ops.philox_words(torch.tensor(seed), offset, n, torch.device("cpu"), "numba"),
        "bda": F.bias_dropout_add(x.view(-1, 8), bias, res, P, seed=seed, offset=offset),
        "default_seed": F.dropout(x, P, training=True),
    }


def _reference(seed: int, offset: int, n: int) -> np.ndarray:
    return philox.random_words(seed, offset, n) >= philox.keep_threshold(P)


class _Kernels(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        n = LARGE if i % 2 else SMALL
        seed = int(torch.randint(0, 2**62, ()))  # the worker's own generator
        info = torch.utils.data.get_worker_info()
        return seed, i, info.id, _run_every_kernel(seed, i, n)


@pytest.fixture
def parent_used_threads():
    """The parent runs every kernel on both paths with two torch threads, so numba's pool
    (GNU OpenMP here) is started before the fork."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for n in (SMALL, LARGE):
            _run_every_kernel(1, 0, n)
        yield
    finally:
        torch.set_num_threads(saved)


def _check_masks(seed: int, offset: int, out: dict[str, torch.Tensor]) -> None:
    n = out["dropout"].numel()
    keep = _reference(seed, offset, n)
    assert np.array_equal(out["dropout"].numpy() != 0, keep)
    assert np.array_equal(out["words"].numpy(), philox.random_words(seed, offset, n))
    assert np.array_equal(out["bda"].reshape(-1).numpy() != 0, keep)


def test_dataloader_fork_workers(parent_used_threads):
    loader = DataLoader(_Kernels(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    items = list(loader)
    assert sorted(i for _, i, _, _ in items) == [0, 1, 2, 3]
    assert {w for _, _, w, _ in items} == {0, 1}
    for seed, i, _, out in items:
        _check_masks(seed, i, out)
    # Masks drawn from each worker's generator differ across workers (same size, same index
    # parity, different worker); keep rate within a 6-sigma binomial bound (p < 2e-9 per check).
    large = [out["default_seed"] for _, i, _, out in items if i % 2]
    assert not torch.equal(large[0] != 0, large[1] != 0)
    for m in large:
        kept = int((m != 0).sum())
        n = m.numel()
        assert abs(kept - n * (1 - P)) < 6 * (n * P * (1 - P)) ** 0.5


def _child(queue) -> None:  # pragma: no cover - runs in the forked child
    torch.set_num_threads(2)  # unlike a DataLoader worker, the child keeps threads
    out = _run_every_kernel(123, 5, LARGE)
    queue.put((threads.parallel_allowed(), {k: v.numpy() for k, v in out.items()}))


def test_plain_fork_child_with_threads(parent_used_threads):
    """A forked child that keeps two torch threads still runs (serially when the parent's pool
    is GNU OpenMP) and gives the parent's masks."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    allowed, out = queue.get(timeout=120)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert allowed == (not threads.fork_unsafe_pool())
    _check_masks(123, 5, {k: torch.from_numpy(v) for k, v in out.items()})
