"""Sharded MC scoring: 4 ranks predict shares of an 11-point pool; gathered, one process's.

Oracle: ``dropkit.mc.predict`` of the whole pool in one process with the same seed and
``consistent=True``; then top-k BALD and BatchBALD pick the same points.
"""

from __future__ import annotations

import pytest
import torch

if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

from dropkit import acquisition
from dropkit.mc import predict

from . import _workers as W


def single_process() -> torch.Tensor:
    pool = W.mc_pool()
    loader = torch.utils.data.DataLoader(pool, batch_size=2)
    result = predict(W.mc_model(), loader, 8, seed=5, consistent=True, target=1, strategy="loop")
    return result.samples


def test_gathered_samples_equal_one_process(ranks):
    ref = single_process()
    assert ref.shape == (8, 11, 3)
    for res in ranks:
        # rows: equal up to BLAS rounding, which depends on the batch composition (measured:
        # one float64 ulp, 1.1e-16); whole batches: bit for bit
        assert torch.allclose(res["mc_rows"], ref, rtol=0, atol=1e-14)
        assert torch.equal(res["mc_batches"], ref)


def test_acquisition_picks_the_same_points(ranks):
    ref = acquisition.acquire(single_process().numpy(), 4, "bald")
    ref_bb = acquisition.batch_bald(single_process().numpy(), 3)
    for res in ranks:
        got = acquisition.acquire(res["mc_rows"].numpy(), 4, "bald")
        assert got.indices.tolist() == ref.indices.tolist()
        assert abs(got.scores - ref.scores).max() <= 1e-12
        bb = acquisition.batch_bald(res["mc_rows"].numpy(), 3)
        assert bb.indices.tolist() == ref_bb.indices.tolist()
        assert abs(bb.batch_scores - ref_bb.batch_scores).max() <= 1e-12
        exact = acquisition.batch_bald(res["mc_batches"].numpy(), 3)
        assert (exact.batch_scores == ref_bb.batch_scores).all()
        assert exact.indices.tolist() == ref_bb.indices.tolist()
