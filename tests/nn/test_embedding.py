"""embedding_dropout, embedded_dropout and EmbeddingDropout against the reference layers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropkit import reference
from dropkit.functional import bernoulli_mask, embedded_dropout, embedding_dropout
from dropkit.nn import EmbeddingDropout
from tests.helpers import clones
from tests.stats import assert_binomial

IDS = torch.tensor([[0, 3, 3, 7], [9, 1, 3, 0]])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _table(v: int = 10, d: int = 4) -> torch.Tensor:
    return torch.randn(v, d, dtype=torch.float64, generator=_gen(0), requires_grad=True)


def test_embedding_dropout_equals_the_reference():
    """float64, identical (V, 1) mask: W~ and dW equal reference.EmbeddingDropout's."""
    w, p = _table(), 0.4
    keep = bernoulli_mask((10, 1), p, generator=_gen(5))
    assert keep.any()
    assert not keep.all()
    out = embedding_dropout(w, p, generator=_gen(5))
    dout = torch.randn(10, 4, dtype=torch.float64, generator=_gen(1))
    out.backward(dout)
    ref = reference.EmbeddingDropout(p)
    expected = ref.forward(w.detach().numpy(), mask=keep.numpy())
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(w.grad.numpy(), ref.backward(dout.numpy()), rtol=1e-12, atol=0)


def test_wrapper_equals_the_reference_embedding():
    """reference.Embedding (dropout then lookup, scatter then dropout backward), same mask."""
    w, p = _table(), 0.4
    layer = EmbeddingDropout(p, nn.Embedding(10, 4, dtype=torch.float64))
    layer.embedding.weight.data.copy_(w.detach())
    torch.manual_seed(6)
    keep = bernoulli_mask((10, 1), p)
    torch.manual_seed(6)
    out = layer(IDS)
    dout = torch.randn(2, 4, 4, dtype=torch.float64, generator=_gen(1))
    out.backward(dout)
    ref = reference.Embedding(10, 4, p)
    ref.params["weight"] = w.detach().numpy().copy()
    ref.dropout.sample_mask = lambda shape: keep.numpy()  # replay torch's draw
    np.testing.assert_allclose(out.detach().numpy(), ref.forward(IDS.numpy()), rtol=1e-12, atol=0)
    ref.backward(dout.numpy())
    grad = layer.embedding.weight.grad.numpy()
    np.testing.assert_allclose(grad, ref.grads["weight"], rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "options",
    [{}, {"padding_idx": 0}, {"scale_grad_by_freq": True}, {"padding_idx": 3, "max_norm": 1.5}],
)
def test_wrapper_is_a_lookup_in_the_row_dropped_weight(options):
    """Output and grad equal F.embedding(ids, embedding_dropout(W)) with the same options."""
    emb = nn.Embedding(10, 4, dtype=torch.float64, **options)
    plain = copy.deepcopy(emb)
    plain(IDS)  # max_norm renormalises the looked-up rows in place, as the wrapper must
    layer = EmbeddingDropout(0.5, emb)
    torch.manual_seed(7)
    out = layer(IDS)
    assert torch.equal(emb.weight, plain.weight)
    torch.manual_seed(7)
    table = embedding_dropout(plain.weight, 0.5)
    opts = {k: v for k, v in options.items() if k != "max_norm"}
    expected = nn.functional.embedding(IDS, table, **opts)
    assert torch.equal(out, expected)
    dout = torch.randn(out.shape, dtype=torch.float64, generator=_gen(2))
    out.backward(dout)
    expected.backward(dout)
    torch.testing.assert_close(emb.weight.grad, plain.weight.grad, rtol=1e-12, atol=0)
    if "padding_idx" in options:
        assert not emb.weight.grad[options["padding_idx"]].any()
    if "max_norm" in options:
        norms = emb.weight.detach()[IDS.unique()].norm(dim=1)
        assert bool((norms <= 1.5 + 1e-12).all())


def test_wrapper_honours_sparse_gradients():
    dense = nn.Embedding(10, 4, dtype=torch.float64)
    sparse = copy.deepcopy(dense)
    sparse.sparse = True
    for emb in (dense, sparse):
        torch.manual_seed(8)
        EmbeddingDropout(0.5, emb)(IDS).sum().backward()
    assert sparse.weight.grad.is_sparse
    assert torch.equal(sparse.weight.grad.to_dense(), dense.weight.grad)


def test_raw_weight_is_never_modified_and_eval_is_the_embedding():
    emb = nn.Embedding(10, 4)
    before = emb.weight.detach().clone()
    layer = EmbeddingDropout(0.5, emb)
    layer(IDS).sum().backward()
    assert torch.equal(emb.weight, before)
    layer.eval()
    assert torch.equal(layer(IDS), emb(IDS))
    weight = torch.randn(5, 3)
    assert EmbeddingDropout(0.5).eval()(weight) is weight
    assert embedding_dropout(weight, 0.5, False) is weight


def test_dropped_words_get_the_same_zero_vector_everywhere():
    layer = EmbeddingDropout(0.3, nn.Embedding(3000, 5))
    ids = torch.arange(3000).repeat(2, 1)
    torch.manual_seed(9)
    out = layer(ids)
    dropped = (out[0] == 0).all(1)
    assert torch.equal(out[0], out[1])
    assert bool(((out[0] != 0).all(1) | dropped).all())
    assert_binomial(int(dropped.sum()), 3000, 0.3, "dropped rows")
    kept = ~dropped
    torch.testing.assert_close(out[0][kept], layer.embedding.weight[kept] / 0.7)


def test_p_one_gives_zeros_and_zero_grad():
    layer = EmbeddingDropout(1.0, nn.Embedding(10, 4))
    out = layer(IDS)
    out.sum().backward()
    assert not out.any()
    assert not layer.embedding.weight.grad.any()


def test_gradcheck_with_the_mask_held_fixed():
    w = _table()
    assert torch.autograd.gradcheck(lambda t: embedding_dropout(t, 0.4, generator=_gen(0)), (w,))
    # Plain table: padding_idx and scale_grad_by_freq alter the gradient on purpose.
    layer = EmbeddingDropout(0.4, nn.Embedding(10, 4, dtype=torch.float64))

    def wrapped(t):
        torch.manual_seed(0)
        return functional_call(layer, {"embedding.weight": t}, (IDS,))

    assert torch.autograd.gradcheck(wrapped, (w,))
    op = lambda t: embedded_dropout(IDS, t, 0.4, generator=_gen(1))  # noqa: E731
    assert torch.autograd.gradcheck(op, (w,))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: embedding_dropout(torch.ones(2, 3, 4)), ValueError, r"\(num_embeddings"),
        (lambda: embedded_dropout(IDS, torch.ones(5)), ValueError, r"\(num_embeddings"),
        (lambda: embedding_dropout(torch.ones(4, 3), p=1.5), ValueError, r"\[0, 1\]"),
        (lambda: embedding_dropout(torch.ones(4, 3, dtype=torch.int32)), TypeError, "float"),
        (lambda: EmbeddingDropout(0.1, nn.Linear(2, 2)), TypeError, "nn.Embedding"),
        (lambda: EmbeddingDropout(-0.5), ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_repr_and_p_validated_on_assignment():
    assert repr(EmbeddingDropout(0.1)) == "EmbeddingDropout(p=0.1)"
    layer = EmbeddingDropout(0.2, nn.Embedding(10, 4))
    assert repr(layer) == "EmbeddingDropout(\n  p=0.2\n  (embedding): Embedding(10, 4)\n)"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer.p = 1.5
    assert layer.p == 0.2


def test_state_dict_copy_and_pickle():
    layer = EmbeddingDropout(0.3, nn.Embedding(10, 4, padding_idx=0))
    assert list(layer.state_dict()) == ["embedding.weight"]
    fresh = EmbeddingDropout(0.3, nn.Embedding(10, 4, padding_idx=0))
    fresh.load_state_dict(layer.state_dict())
    for clone in (fresh, *clones(layer)):
        assert repr(clone) == repr(layer)
        torch.manual_seed(1)
        expected = layer(IDS)
        torch.manual_seed(1)
        assert torch.equal(clone(IDS), expected)
    assert EmbeddingDropout(0.3).state_dict() == {}
    assert repr(copy.deepcopy(EmbeddingDropout(0.3))) == "EmbeddingDropout(p=0.3)"


@pytest.mark.parametrize("wrapped", [False, True])
def test_under_torch_compile_fullgraph(wrapped):
    layer = EmbeddingDropout(0.5, nn.Embedding(10, 4, max_norm=2.0) if wrapped else None)
    x = IDS if wrapped else torch.randn(10, 4)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.manual_seed(2)
    eager = layer(x)
    torch.manual_seed(2)
    out = compiled(x)
    assert torch.equal(out, eager)
    assert (out == 0).all(-1).any()
    layer.eval()
    assert torch.equal(compiled(x), layer.embedding(x) if wrapped else x)
