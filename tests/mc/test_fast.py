"""predict's CPU answers to torch's dropout (dropkit.mc.fast) against torch's own formulas."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as tF

from dropkit import functional as F
from dropkit.mc import fast, replicas
from tests.stats import assert_binomial, assert_within


def _reference(q, k, v, mask, p, causal, scale, seed):
    """torch's SDPA math with the keep mask that dropkit draws from ``seed``."""
    s = q.shape[-1] ** -0.5 if scale is None else scale
    scores = q @ k.transpose(-2, -1) * s
    if causal:
        keep = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        scores = scores.masked_fill(~keep, -torch.inf)
    if mask is not None:
        scores = (
            scores.masked_fill(~mask, -torch.inf) if mask.dtype == torch.bool else scores + mask
        )
    weights = torch.ops.aten._safe_softmax(scores, -1)
    torch.manual_seed(seed)
    return F.dropout(weights, p, True) @ v


@pytest.mark.parametrize("kind", ["none", "bool", "float", "causal"])
def test_sdpa_with_dropout_is_torchs_math_with_dropkits_mask(kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = None
    if kind == "bool":
        mask = torch.rand(5, 5, generator=g) > 0.3
        mask[0] = False  # a row with every key masked: zeros, as torch's safe softmax
    elif kind == "float":
        mask = torch.randn(5, 5, generator=g, dtype=torch.float64)
    causal = kind == "causal"
    torch.manual_seed(7)
    got = fast.scaled_dot_product_attention(q, k, v, mask, 0.4, causal, scale=0.3)
    want = _reference(q, k, v, mask, 0.4, causal, 0.3, 7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # without dropout it is torch's own call
    plain = fast.scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale=0.3)
    torch.testing.assert_close(
        plain, tF.scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale=0.3)
    )


def test_the_mode_answers_dropout_and_leaves_eval_alone():
    x = torch.ones(4000)
    with fast.FastDropout():
        torch.manual_seed(3)
        y = tF.dropout(x, 0.25, True)
        same = tF.dropout(x, 0.25, False)
    torch.manual_seed(3)
    assert torch.equal(y, F.dropout(x, 0.25, True))  # dropkit's kernel, torch's seed
    assert same is x or torch.equal(same, x)
    kept = int((y != 0).sum())
    # Bernoulli(0.75) over 4000 elements: 6 sigma is about 164
    assert abs(kept - 3000) < 164
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.75))


def _bernoulli_calls(fn, inner=None) -> int:
    """How many ``aten.bernoulli_`` calls reach torch's kernel while ``fn()`` runs (under the
    dispatch mode ``inner``, if given, which sees them first)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    count = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            count[0] += func.overloadpacket.__name__ == "bernoulli_"
            return func(*args, **(kwargs or {}))

    with Count(), inner or contextlib.nullcontext():
        fn()
    return count[0]


@pytest.mark.parametrize("layout", ["transposed", "channels_last"])
@pytest.mark.parametrize("inplace", [False, True])
def test_strided_input_is_dropped_in_memory_order_and_keeps_its_strides(layout, inplace):
    base = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    if layout == "transposed":
        x = base.transpose(1, 3)
    else:
        x = base.to(memory_format=torch.channels_last)
    dense = x.permute(sorted(range(4), key=lambda d: -x.stride(d)))
    assert dense.is_contiguous()
    torch.manual_seed(4)
    want = F.dropout(dense.clone(), 0.3, True)  # dropkit's kernel over the memory order
    before, strides = x.clone(), x.stride()
    with fast.FastDropout():
        torch.manual_seed(4)
        y = tF.dropout(x, 0.3, True, inplace)
    assert y.stride() == strides
    assert torch.equal(y.permute(sorted(range(4), key=lambda d: -strides[d])), want)
    if inplace:
        assert y is x
    else:
        assert torch.equal(x, before)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_dropout_is_answered_by_dropkit(need_weights):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(8, 2, dropout=0.4, batch_first=True).double()
    x = torch.randn(64, 6, 8, dtype=torch.float64)
    mha.eval()
    ref_out, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    mha.train()
    call = lambda: mha(x, x, x, need_weights=need_weights, average_attn_weights=False)  # noqa: E731
    assert _bernoulli_calls(call) > 0  # torch draws its own mask outside the mode
    with fast.FastDropout():
        assert _bernoulli_calls(call) == 0
        torch.manual_seed(1)
        out, w = call()
        torch.manual_seed(1)
        again, _ = call()
    assert torch.equal(out, again)  # seeds come from torch's generator
    assert not torch.allclose(out, ref_out)
    if need_weights:  # the returned weights are torch's, after dropout: 0 or w / (1 - p)
        kept = w != 0
        torch.testing.assert_close(w[kept], ref_w[kept] / 0.6)
        assert_binomial(int(kept.sum()), kept.numel(), 0.6, "kept attention weights")
    # unbiased: the mean over draws approaches the eval output
    with fast.FastDropout():
        draws = torch.stack([mha(x, x, x, need_weights=need_weights)[0] for _ in range(200)])
    sd = draws.std(0).mean().item() / 200**0.5
    assert_within((draws.mean(0) - ref_out).mean().item(), 0.0, sd, "mean MHA output - eval")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_fast_bernoulli_fills_torchs_mask_from_the_philox_stream(dtype):
    n = 20_000
    with fast.FastBernoulli():
        torch.manual_seed(11)
        got = torch.empty(n, dtype=dtype).bernoulli_(0.7)
        torch.manual_seed(11)
        again = torch.empty(n, dtype=dtype).bernoulli_(0.7)
        odd = torch.empty(4, 5).t().bernoulli_(0.7)  # not contiguous: torch draws it
        ones = torch.empty(n).bernoulli_(1.0)
    torch.manual_seed(11)
    want = F.bernoulli_mask((n,), 0.3)  # the seed drawn as dropkit draws it
    assert torch.equal(got, want.to(dtype))
    assert torch.equal(got, again)
    assert_binomial(int(got.sum()), n, 0.7, "kept")
    assert set(odd.unique().tolist()) <= {0.0, 1.0}
    assert bool((ones == 1).all())


def test_fast_bernoulli_answers_the_lstm_inter_layer_dropout():
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(4, 8, 2, dropout=0.5, batch_first=True)
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        ref = rnn.eval()(x)[0]
        rnn.train()
        assert _bernoulli_calls(lambda: rnn(x)) == 1
        assert _bernoulli_calls(lambda: rnn(x), fast.FastBernoulli()) == 0
        with fast.FastBernoulli():
            torch.manual_seed(2)
            a = rnn(x)[0]
            torch.manual_seed(2)
            b = rnn(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, ref)


def _layerwise(rnn: torch.nn.RNNBase, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The stacked RNN by hand: one single-layer copy per layer, dropkit's dropout between."""
    kwargs = dict(batch_first=rnn.batch_first, bidirectional=rnn.bidirectional)
    if isinstance(rnn, torch.nn.LSTM):
        kwargs["proj_size"] = rnn.proj_size
    if isinstance(rnn, torch.nn.RNN):
        kwargs["nonlinearity"] = rnn.nonlinearity
    layers, width = [], rnn.input_size
    for layer in range(rnn.num_layers):
        one = type(rnn)(width, rnn.hidden_size, 1, **kwargs).double()
        with torch.no_grad():
            for name, param in one.named_parameters():
                param.copy_(getattr(rnn, name.replace("_l0", f"_l{layer}")))
        layers.append(one)
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
    torch.manual_seed(seed)  # after building: initialising the copies draws numbers
    out = x
    for layer, one in enumerate(layers):
        out = one(out)[0]
        if layer < rnn.num_layers - 1:
            out = fast.dropout(out, rnn.dropout, True)
    return out


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (torch.nn.LSTM, dict(batch_first=True)),
        (torch.nn.LSTM, dict(batch_first=False, bidirectional=True)),
        (torch.nn.LSTM, dict(batch_first=True, proj_size=3)),
        (torch.nn.GRU, dict(batch_first=True)),
        (torch.nn.RNN, dict(batch_first=False, nonlinearity="relu")),
    ],
)
def test_stacked_rnn_is_torchs_rnn_layer_by_layer_with_dropkits_dropout(cls, kwargs):
    torch.manual_seed(0)
    rnn = cls(4, 6, 3, dropout=0.4, **kwargs).double().train()
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    with torch.no_grad():
        want = _layerwise(rnn, x, seed=3)
        with fast.FastDropout():
            torch.manual_seed(3)
            got = rnn(x)[0]
            assert _bernoulli_calls(lambda: rnn(x)) == 0  # torch draws no mask
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_first_layer_of_a_replicated_batch_runs_once(batch_first):
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(4, 6, 2, dropout=0.5, batch_first=batch_first).double().train()
    k, n = 5, 3
    one = torch.randn(n, 7, 4, dtype=torch.float64)
    x = one.repeat(k, 1, 1)  # sample-major copies, as predict replicates a batch
    if not batch_first:
        x = x.transpose(0, 1)
    seen = []
    lstm = torch._C._VariableFunctions.lstm

    def spy(*args):
        seen.append(args[0].shape[0 if batch_first else 1])
        return lstm(*args)

    hx = tuple(torch.zeros(2, k * n, 6, dtype=torch.float64) for _ in range(2))
    params = [p.detach() for p in rnn._flat_weights]
    args = (x, hx, params, True, 2, 0.5, True, False, batch_first)
    with torch.no_grad():
        torch.manual_seed(8)
        plain = fast.stacked_rnn(spy, *args)
        assert seen == [k * n, k * n]
        seen.clear()
        with replicas.replicated(k, n):
            torch.manual_seed(8)
            once = fast.stacked_rnn(spy, *args)
            assert seen == [n, k * n]  # layer 0 on one copy
            seen.clear()
            other = x.clone()
            other.select(0 if batch_first else 1, -1).add_(1.0)  # the copies differ: no shortcut
            fast.stacked_rnn(spy, other, *args[1:])
            assert seen == [k * n, k * n]
    for a, b in zip(plain, once, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_packed_sequence_rnn_draws_its_inter_layer_mask_from_the_philox_stream():
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    rnn = torch.nn.GRU(4, 6, 2, dropout=0.5, batch_first=True).train()
    packed = pack_padded_sequence(torch.randn(3, 5, 4), [5, 4, 2], batch_first=True)
    with torch.no_grad():
        assert _bernoulli_calls(lambda: rnn(packed)) == 1
        with fast.FastDropout():
            assert _bernoulli_calls(lambda: rnn(packed)) == 0
            torch.manual_seed(5)
            a = rnn(packed)[0].data
            torch.manual_seed(5)
            b = rnn(packed)[0].data
        eval_out = rnn.eval()(packed)[0].data
    assert torch.equal(a, b)
    assert not torch.allclose(a, eval_out)
