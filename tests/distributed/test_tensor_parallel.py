"""Tensor-parallel dropout: a shard's output is its block of dropout of the whole tensor.

Oracle: ``dropkit.functional.dropout`` of the unsharded tensor with the same key. The block
arithmetic is checked in one process on every split of a 3-D tensor (both code paths: one
kernel call per run and the gathered span); DTensor ``Shard(-1)``, ``Shard(1)`` and
``Replicate`` are checked on 4 gloo ranks (a dim of 6 split 2, 2, 2, 0; a dim of 4 split 1 each).
"""

from __future__ import annotations

import itertools

import pytest
import torch

if not torch.distributed.is_available():  # pragma: no cover - builds without distributed
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

from dropkit import functional as F
from dropkit.distributed import dropout_shard, dtensor_dropout
from dropkit.rng import shard, stream

SHAPE = (3, 4, 6)


def blocks(shape, parts=2):
    """Every block of ``shape`` split into ``parts`` along one dim (torch.chunk sizes)."""
    for dim, n in enumerate(shape):
        size = -(-n // parts)
        for start in range(0, n, size):
            yield dim, start, min(size, n - start)


@pytest.mark.parametrize("max_runs", [32, 0])
def test_every_block_is_its_part_of_the_whole(max_runs, monkeypatch):
    monkeypatch.setattr(shard, "MAX_RUNS", max_runs)  # 0: the gathered-span path
    x = torch.randn(SHAPE, dtype=torch.float64)
    whole = F.dropout(x, 0.4, seed=5, offset=17)
    for dim, start, size in blocks(SHAPE):
        index = [slice(None)] * 3
        index[dim] = slice(start, start + size)
        origin = [0, 0, 0]
        origin[dim] = start
        part = dropout_shard(
            x[tuple(index)], 0.4, global_shape=SHAPE, shard_offset=origin, seed=5, offset=17
        )
        assert torch.equal(part, whole[tuple(index)]), (dim, start)


def test_two_dim_blocks_and_gradient():
    x = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    whole = F.dropout(x, 0.5, seed=9)
    for a, b in itertools.product(range(0, 4, 2), range(0, 6, 3)):
        block = x[:, a : a + 2, b : b + 3]
        part = dropout_shard(block, 0.5, global_shape=SHAPE, shard_offset=(0, a, b), seed=9)
        assert torch.equal(part, whole[:, a : a + 2, b : b + 3])
    torch.autograd.gradcheck(
        lambda t: dropout_shard(t, 0.5, global_shape=(4, 6), shard_offset=(0, 0), seed=1),
        torch.randn(4, 6, dtype=torch.float64, requires_grad=True),
    )


def test_key_comes_from_the_stream():
    x = torch.randn(4, 6)
    with stream(3):
        a = dropout_shard(x[:, 3:], 0.5, global_shape=(4, 6), shard_offset=(0, 3))
    with stream(3):
        b = F.dropout(x, 0.5)
    assert torch.equal(a, b[:, 3:])


def test_eval_and_p0_return_the_input_and_bad_blocks_raise():
    x = torch.randn(2, 3)
    assert dropout_shard(x, 0.5, False, global_shape=(2, 6), shard_offset=(0, 3)) is x
    assert dropout_shard(x, 0.0, global_shape=(2, 6), shard_offset=(0, 3)) is x
    with pytest.raises(ValueError, match="does not fit the global shape"):
        dropout_shard(x, 0.5, global_shape=(2, 6), shard_offset=(0, 4), seed=0)
    with pytest.raises(ValueError, match="same number of dims"):
        dropout_shard(x, 0.5, global_shape=(6,), shard_offset=(0,), seed=0)
    assert torch.equal(dtensor_dropout(x, 0.5, seed=2), F.dropout(x, 0.5, seed=2))


@pytest.mark.parametrize("name", ["hidden", "seq", "rep"])
def test_dtensor_on_four_ranks(name, ranks):
    whole = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = F.dropout(whole, 0.5, seed=11)
    grad = F.dropout(torch.ones_like(whole), 0.5, seed=11)
    for res in ranks:
        assert torch.equal(res[name], expected)
        assert torch.equal(res[name + "_grad"], grad)
        with stream(11):
            assert torch.equal(res[name + "_module"], F.dropout(whole, 0.5))
        shared = F.dropout(whole, 0.5, broadcast_dims=(2,), seed=11)
        assert torch.equal(res[name + "_shared"], shared)
    local = [res[name + "_local"] for res in ranks]
    if name == "rep":  # replicated: the same mask on every rank
        assert all(torch.equal(t, local[0]) for t in local)
    else:  # the ranks hold different blocks
        dim = -1 if name == "hidden" else 1
        assert torch.equal(torch.cat(local, dim), expected)
