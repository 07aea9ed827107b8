"""DDP (and FSDP2) in data-parallel mode equal one process on the global batch.

Oracle: a single process training the same float64 model on the concatenated batches inside
``dropkit.rng.stream(seed, model)``. Runs W = 1, 2, 4 gloo processes on 127.0.0.1 (free ports).
One start-up of 4 processes covers W = 4 (the world), 2 and 1 (subgroups), and the controls:
the same stream without the row shard differs, uneven batches and unequal seeds raise on every
rank; FSDP2 (``fully_shard``) on a CPU mesh of 4 matches too.
"""

from __future__ import annotations

import pytest
import torch

if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

from dropkit.rng import stream

from . import _workers as W


def reference(kind: str) -> dict[str, torch.Tensor]:
    """Parameters after training on the whole batch in one process, same stream seed."""
    net = W.make_model(kind)
    with stream(W.SEED, model=net):
        W.train(net, net, kind, rank=0, world=1)
    return W.params(net)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ddp_matches_one_process(world, ranks):
    for kind in ("mlp", "cnn"):
        ref = reference(kind)
        for rank, res in enumerate(ranks[:world]):
            assert max_diff(res[f"{kind}_{world}"], ref) <= 1e-10, (kind, world, rank)
        # every rank drew the same keys
        assert len({str(r[f"{kind}_{world}_state"]) for r in ranks[:world]}) == 1


def test_same_stream_without_row_shard_differs(ranks):
    # The control that shows the comparison can fail: every rank keyed alike but each
    # taking positions from 0 (the masks of its own rows, not of its place in the batch).
    res = ranks[0]
    assert max_diff(res["mlp_unsharded"], reference("mlp")) > 1e-3


def test_uneven_batches_raise_on_every_rank(ranks):
    for res in ranks:
        assert "local batches of [3, 4, 5, 6] rows" in res["uneven_error"]
        assert "allow_uneven=True" in res["uneven_error"]


def test_different_seeds_raise_on_every_rank(ranks):
    for res in ranks:
        assert "different seeds [123, 124, 125, 126]" in res["seed_error"]


def test_fsdp2_matches_one_process(ranks):
    ref = reference("mlp")
    for res in ranks:
        assert not isinstance(res["fsdp"], str), res["fsdp"]
        assert max_diff(res["fsdp"], ref) <= 1e-10


def test_data_parallel_needs_a_process_group():
    from dropkit.distributed import data_parallel

    with pytest.raises(RuntimeError, match="init_process_group"):
        data_parallel(seed=0)
