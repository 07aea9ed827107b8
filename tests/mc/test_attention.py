"""MC self-attention without copies (dropkit.mc.attention) against torch's MultiheadAttention."""

from __future__ import annotations

import pytest
import torch

from dropkit.mc import attention, fast
from tests.stats import assert_within

E, H, L, N, K = 12, 3, 5, 4, 3


def _module(batch_first: bool, p: float = 0.0) -> torch.nn.MultiheadAttention:
    torch.manual_seed(0)
    return torch.nn.MultiheadAttention(E, H, dropout=p, batch_first=batch_first).double().train()


def _inner(x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """The ``(L, N, E)`` view torch's module hands to ``F.multi_head_attention_forward``."""
    return x.transpose(0, 1) if batch_first else x


def _call(mha, x, drop, replicas=None) -> torch.Tensor:
    with torch.no_grad():
        out = attention.self_attention(
            _inner(x, mha.batch_first), H, mha.in_proj_weight, mha.in_proj_bias, 0.5,
            mha.out_proj.weight, mha.out_proj.bias, drop, replicas,
        )  # fmt: skip
    return _inner(out, mha.batch_first)


def _replicated(batch_first: bool) -> torch.Tensor:
    one = torch.randn(N, L, E, dtype=torch.float64)
    x = one.repeat(K, 1, 1)  # sample-major copies, as predict replicates a batch
    return x if batch_first else x.transpose(0, 1).contiguous()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("replicas", [None, (K, N)])
def test_without_dropout_it_is_torchs_attention(batch_first, replicas):
    mha = _module(batch_first)
    x = _replicated(batch_first)
    with torch.no_grad():
        want, _ = mha(x, x, x, need_weights=False)
        got = attention.self_attention(
            _inner(x, batch_first), H, mha.in_proj_weight, mha.in_proj_bias, 0.0,
            mha.out_proj.weight, mha.out_proj.bias, None, replicas,
        )  # fmt: skip
    torch.testing.assert_close(_inner(got, batch_first), want, rtol=1e-12, atol=1e-12)


def _by_hand(mha, x_bf: torch.Tensor, drop_of) -> torch.Tensor:
    """Batch-first attention, head by head, with the weights of (row i, head h) dropped by
    ``drop_of(i, h, weights)``."""
    rows, length, _ = x_bf.shape
    d = E // H
    q, k, v = torch.nn.functional.linear(x_bf, mha.in_proj_weight, mha.in_proj_bias).split(E, -1)
    out = torch.empty(rows, length, E, dtype=x_bf.dtype)
    for i in range(rows):
        for h in range(H):
            cols = slice(h * d, (h + 1) * d)
            w = torch.softmax(q[i, :, cols] @ k[i, :, cols].T / d**0.5, -1)
            out[i, :, cols] = drop_of(i, h, w) @ v[i, :, cols]
    return torch.nn.functional.linear(out, mha.out_proj.weight, mha.out_proj.bias)


@pytest.mark.parametrize("batch_first", [True, False])
def test_replicated_copies_are_computed_once_and_dropped_in_the_buffer_layout(batch_first):
    mha = _module(batch_first)
    x = _replicated(batch_first)
    gen = torch.Generator().manual_seed(3)
    mask = torch.randint(0, 2, (H, N, K, L, L), generator=gen).double() * 2.0
    shapes = []

    def drop(t, p):
        shapes.append(tuple(t.shape))
        return t.mul_(mask)

    got = _call(mha, x, drop, (K, N))
    assert shapes == [(H, N, K, L, L)]  # one copy projected, k copies of its weights dropped
    x_bf = x if batch_first else x.transpose(0, 1)
    want = _by_hand(mha, x_bf, lambda i, h, w: w * mask[h, i % N, i // N])
    torch.testing.assert_close(got if batch_first else got.transpose(0, 1), want)


@pytest.mark.parametrize("batch_first", [True, False])
def test_copies_that_differ_are_each_computed(batch_first):
    mha = _module(batch_first)
    x = _replicated(batch_first)
    (x[-1] if batch_first else x[:, -1]).add_(1.0)  # the last copy differs in one row
    gen = torch.Generator().manual_seed(4)
    mask = torch.randint(0, 2, (H, K * N, L, L), generator=gen).double() * 2.0
    shapes = []

    def drop(t, p):
        shapes.append(tuple(t.shape))
        return t.mul_(mask)

    got = _call(mha, x, drop, (K, N))
    assert shapes == [(H, K * N, L, L)]
    x_bf = x if batch_first else x.transpose(0, 1)
    want = _by_hand(mha, x_bf, lambda i, h, w: w * mask[h, i])
    torch.testing.assert_close(got if batch_first else got.transpose(0, 1), want)


def _args(mha, x, **overrides) -> tuple[tuple, dict]:
    args = (
        x, x, x, E, H, mha.in_proj_weight, mha.in_proj_bias, None, None, False, 0.3,
        mha.out_proj.weight, mha.out_proj.bias,
    )  # fmt: skip
    kwargs = dict(training=True, need_weights=False)
    kwargs.update(overrides)
    return args, kwargs


@pytest.mark.parametrize(
    "overrides",
    [
        dict(need_weights=True),
        dict(training=False),
        dict(key_padding_mask=torch.zeros(N, L, dtype=torch.bool)),
        dict(attn_mask=torch.zeros(L, L)),
        dict(is_causal=True, attn_mask=torch.zeros(L, L)),
    ],
    ids=["need_weights", "eval", "key_padding_mask", "attn_mask", "causal"],
)
def test_other_calls_are_left_to_torch(overrides):
    mha = _module(False).float()
    x = torch.randn(L, N, E)
    args, kwargs = _args(mha, x, **overrides)
    with torch.no_grad():
        assert attention.multi_head_attention(args, kwargs, None, None) is None
        args, kwargs = _args(mha, x)
        assert attention.multi_head_attention(args, kwargs, fast._drop_inplace, None) is not None
        cross = (x, x.clone(), x.clone(), *args[3:])  # not self-attention
        assert attention.multi_head_attention(cross, kwargs, None, None) is None
    assert attention.multi_head_attention(args, kwargs, None, None) is None  # records a graph


def test_the_mode_answers_a_module_call_unbiased():
    mha = _module(True, p=0.4)
    x = torch.randn(64, L, E, dtype=torch.float64)
    with torch.no_grad():
        mha.eval()
        ref, _ = mha(x, x, x, need_weights=False)
        mha.train()
        with fast.FastDropout():
            torch.manual_seed(1)
            one, _ = mha(x, x, x, need_weights=False)
            torch.manual_seed(1)
            again, _ = mha(x, x, x, need_weights=False)
            draws = torch.stack([mha(x, x, x, need_weights=False)[0] for _ in range(200)])
    assert torch.equal(one, again)  # seeds come from torch's generator
    assert not torch.allclose(one, ref)
    assert one.is_contiguous()  # the module's batch_first output, as torch returns it
    sd = draws.std(0).mean().item() / 200**0.5
    assert_within((draws.mean(0) - ref).mean().item(), 0.0, sd, "mean MHA output - eval")
