"""Dropout streams: explicit keys per call site, resume, activation checkpointing, row shards.

Oracles: the functional with the explicit ``seed=call_key(...)`` the stream promises; the same
computation without a stream (torch's generator) for the default; the whole batch for row
shards (the data-parallel arithmetic, checked here in one process).
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn

from dropkit import functional as F
from dropkit import nn as dkn
from dropkit.distributed import RowShard
from dropkit.rng import Stream, call_key, draw_seed, stream
from dropkit.rng.stream import current, site_of

# Every functional that draws its own key, with a batch-first input (N, C, L).
OPS = {
    "dropout": lambda t: F.dropout(t, 0.3),
    "dropout_shared": lambda t: F.dropout(t, 0.3, broadcast_dims=(2,)),
    "dropout1d": lambda t: F.dropout1d(t, 0.3),
    "drop_path": lambda t: F.drop_path(t, 0.3),
    "alpha": lambda t: F.alpha_dropout(t, 0.3, True),
    "feature_alpha": lambda t: F.feature_alpha_dropout(t, 0.3, True),
    "gaussian": lambda t: F.gaussian_dropout(t, 0.3),
    "bias_dropout_add": lambda t: F.bias_dropout_add(t, torch.ones(5), t, 0.3),
}


def test_default_draws_from_torch_generator():
    x = torch.randn(64)
    torch.manual_seed(0)
    a = F.dropout(x, 0.5)
    torch.manual_seed(0)
    seed = int(torch.randint(0, 2**63 - 1, ()))
    assert torch.equal(a, F.dropout(x, 0.5, seed=seed))
    assert current() is None


def test_stream_keys_are_call_key_of_the_call_count():
    x = torch.randn(64)
    with stream(7) as s:
        a, b = F.dropout(x, 0.5), F.dropout(x, 0.5)
        assert int(draw_seed()) == call_key(7, 0, 2)
    assert current() is None
    assert torch.equal(a, F.dropout(x, 0.5, seed=call_key(7, 0, 0)))
    assert torch.equal(b, F.dropout(x, 0.5, seed=call_key(7, 0, 1)))
    assert not torch.equal(a, b)
    assert s.state_dict() == {"seed": 7, "counts": {0: 3}}


def test_explicit_seed_and_generator_win_over_the_stream():
    x = torch.randn(64)
    gen = torch.Generator().manual_seed(3)
    expected = F.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    with stream(7) as s:
        assert torch.equal(F.dropout(x, 0.5, seed=11), F.dropout(x, 0.5, seed=11))
        assert torch.equal(F.dropout(x, 0.5, generator=gen), expected)
    assert s.counts == {}


def test_call_keys_are_distinct_63_bit():
    keys = {call_key(s, site, c) for s in (0, 1) for site in (0, 1, 3) for c in range(5000)}
    assert len(keys) == 2 * 3 * 5000
    assert all(0 <= k < 2**63 for k in keys)
    with pytest.raises(ValueError, match=r"\[0, 2\^63\)"):
        stream(-1)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = dkn.Dropout(0.5), dkn.Dropout(0.5)

    def forward(self, x: torch.Tensor, skip_a: bool) -> torch.Tensor:
        return self.b(x if skip_a else self.a(x))


def test_model_sites_keep_a_layers_masks_when_another_is_skipped():
    model, x = Branchy(), torch.randn(4, 32)

    def run(skip: bool, with_model: bool) -> torch.Tensor:
        s = stream(5, model=model if with_model else None)
        with s:
            out = model(x, skip)
        s.close()
        return out

    key_a, key_b = (call_key(5, site_of(name), 0) for name in ("a", "b"))
    full = F.dropout(F.dropout(x, 0.5, seed=key_a), 0.5, seed=key_b)
    assert torch.equal(run(False, True), full)
    assert torch.equal(run(True, True), F.dropout(x, 0.5, seed=key_b))  # b's mask stays
    assert not model.a._forward_pre_hooks  # close() removed the hooks
    # without model=, keys follow the call count: skipping a moves b's mask
    first, second = call_key(5, 0, 0), call_key(5, 0, 1)
    assert torch.equal(
        run(False, False), F.dropout(F.dropout(x, 0.5, seed=first), 0.5, seed=second)
    )
    assert torch.equal(run(True, False), F.dropout(x, 0.5, seed=first))


def test_state_dict_resumes_exactly():
    model = nn.Sequential(nn.Linear(8, 8), dkn.Dropout(0.5), dkn.DropPath(0.5))
    x = torch.randn(4, 8)
    s = stream(9, model=model)
    with s:
        for _ in range(3):
            model(x)
        saved = s.state_dict()
        after = [model(x) for _ in range(2)]
    s.close()
    resumed = stream(0, model=model)
    resumed.load_state_dict(saved)
    with resumed:
        again = [model(x) for _ in range(2)]
    resumed.close()
    assert all(torch.equal(a, b) for a, b in zip(after, again, strict=True))


def test_activation_checkpointing_replays_the_stream():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(16, 16), dkn.Dropout(0.5), nn.Linear(16, 16))
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    block = block.double()

    def grads(checkpoint: bool, context: bool) -> torch.Tensor:
        x.grad = None
        s = Stream(3, model=block)
        with s:
            if checkpoint:
                fn = s.checkpoint_context if context else cp.noop_context_fn
                y = cp.checkpoint(block, x, use_reentrant=False, context_fn=fn)
            else:
                y = block(x)
            y.square().sum().backward()
        s.close()
        return x.grad.clone()

    plain = grads(False, False)
    assert torch.equal(grads(True, True), plain)
    assert not torch.equal(grads(True, False), plain)  # the recomputation drew a new key


@pytest.mark.parametrize("name", sorted(OPS))
def test_row_shards_reproduce_the_whole_batch(name):
    op, x = OPS[name], torch.randn(6, 3, 5)
    with stream(5):
        whole = op(x)
    for sizes in ([2, 2, 2], [1, 3, 2]):
        parts, start = [], 0
        for rank, rows in enumerate(sizes):
            with stream(5) as s:
                s.shard = RowShard(rank, len(sizes))
                if sizes != [2, 2, 2]:
                    s.shard.set_rows(sizes)
                parts.append(op(x[start : start + rows]))
            start += rows
        assert torch.equal(torch.cat(parts), whole), sizes


def test_row_shard_refuses_what_it_cannot_split():
    with stream(5) as s:
        s.shard = RowShard(1, 2)
        s.shard.set_rows([3, 3])
        with pytest.raises(RuntimeError, match="does not split into the 3 local rows"):
            F.dropout(torch.ones(2, 4), 0.5)
        with pytest.raises(RuntimeError, match="does not report its mask size"):
            draw_seed()


MODULES = {
    # one mask for the whole batch: every rank must use it unshifted (needs model=)
    "dropconnect": lambda: dkn.DropConnectLinear(5, 5, p=0.3),
    "droppath_batch": lambda: dkn.DropPath(0.3, mode="batch"),
    "dropout_shared_dim0": lambda: dkn.Dropout(0.3, broadcast_dims=(0, -1)),
    # batch-first masks: shifted by the rank's first row
    "locked_batch_first": lambda: dkn.LockedDropout(0.3, batch_first=True),
    "dropout_shared_dim1": lambda: dkn.Dropout(0.3, broadcast_dims=(1,)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_row_shards_of_modules_with_shared_masks(name):
    torch.manual_seed(0)
    module, x = MODULES[name](), torch.randn(6, 3, 5)
    with stream(5, model=module) as s:
        whole = module(x)
    s.close()
    parts = []
    for rank in range(3):
        with stream(5, model=module) as s:
            s.shard = RowShard(rank, 3)
            parts.append(module(x[2 * rank : 2 * rank + 2]))
        s.close()
    assert torch.equal(torch.cat(parts), whole)


def test_time_major_locked_dropout_shards_by_batch_without_model():
    # (T, N, H): mask (1, N, H), element n * H + h at position n * H + h, so the even-batch
    # shift rank * n is the rank's first batch row whichever layout.
    x = torch.randn(4, 6, 5)
    with stream(5):
        whole = F.locked_dropout(x, 0.3)
    parts = []
    for rank in range(2):
        with stream(5) as s:
            s.shard = RowShard(rank, 2)
            parts.append(F.locked_dropout(x[:, 3 * rank : 3 * rank + 3], 0.3))
    assert torch.equal(torch.cat(parts, 1), whole)


# Importing inductor runs torch.utils.mkldnn, which uses the deprecated torch.jit.script_method.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
# Dynamo probes .grad of the tensors it resumes with after the key's graph break; it hides this
# warning itself, but the suite turns warnings into errors first.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_torch_compile_under_a_stream_matches_eager_without_recompiling():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(8, 8), dkn.Dropout(0.5)), torch.randn(4, 8)
    compiled = torch.compile(model)
    with stream(3):
        eager = [model(x) for _ in range(4)]
    with stream(3):
        got = [compiled(x) for _ in range(2)]
        graphs = counters["stats"]["unique_graphs"]
        got += [compiled(x) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(got, eager, strict=True))
    assert counters["stats"]["unique_graphs"] == graphs  # the key is a graph input
    torch._dynamo.reset()
