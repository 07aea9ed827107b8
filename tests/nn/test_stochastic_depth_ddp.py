"""Skip-compute stochastic depth under DistributedDataParallel (gloo, 2 CPU processes).

A step in which one rank keeps no sample (``mode="batch"`` skipping the branch, or ``"row"``
keeping no row) must neither hang nor error with DDP's default
``find_unused_parameters=False``: the branch still runs on an empty batch, so its parameters
get (zero) gradients on that rank and every gradient bucket is reduced. The gradients DDP leaves
are checked against the average of the ranks' local gradients.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from torch import nn

import dropkit.nn as dkn
from dropkit.functional.drop_path_residual import kept_rows
from tests.helpers import rendezvous, spawn_ranks

dist = pytest.importorskip("torch.distributed", reason="torch.distributed is not available")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)

WORLD, N, L, D, P = 2, 4, 3, 4, 0.6
# (mode, the number of rows each rank keeps in that step: "none", "some", "all"); a step with
# "none" on one rank and rows kept on the other is the case DDP could stall on.
STEPS = [("batch", ("none", "all")), ("row", ("none", "some")), ("row", ("some", "none")),
         ("batch", ("all", "none")), ("row", ("some", "some"))]  # fmt: skip


def build(mode: str) -> nn.Module:
    torch.manual_seed(0)
    branch = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
    return nn.Sequential(nn.Linear(D, D), dkn.StochasticDepth(branch, P, mode=mode))


def seed_keeping(want: str, mode: str) -> int:
    """A seed of torch's generator after which the module keeps ``want`` rows of ``N``."""
    for seed in range(1000):
        generator = torch.Generator().manual_seed(seed)  # the stream manual_seed(seed) gives
        kept = kept_rows(N, P, mode, ndim=3, generator=generator)[0].numel()
        if {"none": kept == 0, "all": kept == N, "some": 0 < kept < N}[want]:
            return seed
    raise AssertionError(f"no seed keeps {want} rows")


def worker(rank: int, init_method: str, seeds: list[list[int]]) -> None:
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=30),
    )  # fmt: skip
    try:
        torch.set_num_threads(1)
        models = {mode: build(mode) for mode in ("row", "batch")}
        local = {mode: build(mode) for mode in ("row", "batch")}  # same weights, no DDP
        ddp = {mode: nn.parallel.DistributedDataParallel(m) for mode, m in models.items()}
        x = torch.randn(N, L, D, generator=torch.Generator().manual_seed(rank))
        for (mode, wants), step_seeds in zip(STEPS, seeds, strict=True):
            seed = step_seeds[rank]
            torch.manual_seed(seed)
            ddp[mode](x).square().sum().backward()
            torch.manual_seed(seed)
            local[mode](x).square().sum().backward()
            for name, p in models[mode].named_parameters():
                ref = local[mode].get_parameter(name).grad
                if wants[rank] == "none" and name.startswith("1."):
                    assert not ref.any(), name  # the empty-batch branch's zero gradient
                dist.all_reduce(ref)
                torch.testing.assert_close(p.grad, ref / WORLD, rtol=1e-5, atol=1e-6)
            for m in (models[mode], local[mode]):
                m.zero_grad(set_to_none=True)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes that import torch; the empty-batch gradients are also tested
# in-process (test_stochastic_depth.py::test_every_parameter_gets_a_gradient_when_nothing_is_kept)
def test_a_rank_that_keeps_no_sample_neither_hangs_nor_errors_under_ddp():
    """Default find_unused_parameters=False; the gradients are the average of the ranks'."""
    seeds = [[seed_keeping(want, mode) for want in wants] for mode, wants in STEPS]
    spawn_ranks(worker, WORLD, (rendezvous(), seeds))
