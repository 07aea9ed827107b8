"""dropconnect_linear and DropConnectLinear against dropkit.reference.DropConnectLinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropkit import reference
from dropkit.functional import bernoulli_mask, dropconnect_linear
from dropkit.nn import DropConnectLinear
from tests.helpers import clones
from tests.stats import assert_binomial

# Matmul summation order differs between BLAS and NumPy: a few ulps, so an atol near zero.
TOL = {"rtol": 1e-12, "atol": 1e-14}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_forward_and_grads_equal_the_reference(lead, bias):
    """float64, identical mask M: y, dx, dW, db equal the reference layer's."""
    p, seed = 0.4, 11
    layer = DropConnectLinear(5, 4, p, bias=bias, dtype=torch.float64)
    x = torch.randn(*lead, 5, dtype=torch.float64, generator=_gen(0), requires_grad=True)
    dout = torch.randn(*lead, 4, dtype=torch.float64, generator=_gen(1))
    keep = bernoulli_mask(layer.weight.shape, p, generator=_gen(seed))
    assert keep.any()
    assert not keep.all()
    y = dropconnect_linear(x, layer.weight, layer.bias, p, generator=_gen(seed))
    y.backward(dout)
    ref = reference.DropConnectLinear(5, 4, p, bias=bias, rng=0)
    ref.params["weight"] = layer.weight.detach().numpy().copy()
    if bias:
        ref.params["bias"] = layer.bias.detach().numpy().copy()
    np.testing.assert_allclose(
        y.detach().numpy(), ref.forward(x.detach().numpy(), mask=keep.numpy()), **TOL
    )
    np.testing.assert_allclose(x.grad.numpy(), ref.backward(dout.numpy()), **TOL)
    np.testing.assert_allclose(layer.weight.grad.numpy(), ref.grads["weight"], **TOL)
    if bias:
        np.testing.assert_allclose(layer.bias.grad.numpy(), ref.grads["bias"], **TOL)


def test_module_draws_its_mask_from_the_global_generator():
    layer = DropConnectLinear(5, 4, 0.5, dtype=torch.float64)
    x = torch.randn(3, 5, dtype=torch.float64)
    torch.manual_seed(3)
    out = layer(x)
    torch.manual_seed(3)
    keep = bernoulli_mask(layer.weight.shape, 0.5)
    expected = x @ torch.where(keep, layer.weight * 2.0, 0.0).T + layer.bias
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)


def test_same_init_as_linear_and_eval_is_linear():
    torch.manual_seed(0)
    plain = nn.Linear(7, 3)
    torch.manual_seed(0)
    layer = DropConnectLinear(7, 3, p=0.3)
    assert torch.equal(layer.weight, plain.weight)
    assert torch.equal(layer.bias, plain.bias)
    x = torch.randn(4, 7)
    assert torch.equal(layer.eval()(x), plain(x))
    assert not torch.equal(layer.train()(x), plain(x))
    assert DropConnectLinear(3, 2, dtype=torch.float64).weight.dtype == torch.float64


def test_kept_fraction_and_scale():
    """x = I, W = 1, no bias: y = M^T / q, so y counts the kept weights and shows the scale."""
    p = 0.3
    layer = DropConnectLinear(200, 100, p, bias=False)
    nn.init.ones_(layer.weight)
    torch.manual_seed(4)
    y = layer(torch.eye(200))
    kept = y != 0
    assert_binomial(int(kept.sum()), 20000, 1 - p, "kept weights")
    assert torch.equal(y[kept], torch.full((int(kept.sum()),), 1 / (1 - p)))


def test_one_mask_per_forward_shared_by_the_batch():
    layer = DropConnectLinear(30, 20, 0.5, bias=False)
    x = torch.randn(1, 30).expand(8, 30)
    first, second = layer(x), layer(x)
    assert torch.equal(first, first[:1].expand_as(first))
    assert not torch.equal(first, second)


def test_p_one_leaves_the_bias_with_zero_grads():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.full((2, 4), float("inf"), requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    y = dropconnect_linear(x, w, b, 1.0)
    y.sum().backward()
    assert torch.equal(y, b.detach().expand(3, 2))
    assert not x.grad.any()
    assert not w.grad.any()
    assert torch.equal(b.grad, torch.full((2,), 3.0))


def test_gradcheck_with_the_mask_held_fixed():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    op = lambda x, w, b: dropconnect_linear(x, w, b, 0.4, generator=_gen(0))  # noqa: E731
    assert torch.autograd.gradcheck(op, (x, w, b))
    layer = DropConnectLinear(4, 5, 0.4, dtype=torch.float64)

    def module(x, w, b):
        torch.manual_seed(0)
        return functional_call(layer, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(module, (x, w, b))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dropconnect_linear(torch.ones(2, 3), torch.ones(3)), ValueError, "2-D"),
        (lambda: dropconnect_linear(torch.ones(2, 3), "w"), ValueError, "2-D"),
        (
            lambda: dropconnect_linear(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3)),
            TypeError,
            "floating-point",
        ),
        (
            lambda: dropconnect_linear(torch.ones(2, 3), torch.ones(2, 3), p=-0.1),
            ValueError,
            r"\[0, 1\]",
        ),
        (lambda: DropConnectLinear(3, 2, p=2.0), ValueError, r"\[0, 1\]"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_repr_and_p_validated_on_assignment():
    layer = DropConnectLinear(5, 3, p=0.25, bias=False)
    assert repr(layer) == "DropConnectLinear(in_features=5, out_features=3, bias=False, p=0.25)"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer.p = 1.5
    assert layer.p == 0.25


def test_state_dict_copy_and_pickle():
    layer = DropConnectLinear(6, 4, p=0.3)
    assert list(layer.state_dict()) == ["weight", "bias"]
    fresh = DropConnectLinear(6, 4, p=0.3)
    fresh.load_state_dict(layer.state_dict())
    plain = nn.Linear(6, 4)
    plain.load_state_dict(layer.state_dict())  # interchangeable with nn.Linear
    x = torch.randn(2, 6)
    for clone in (fresh, *clones(layer)):
        assert repr(clone) == repr(layer)
        torch.manual_seed(1)
        expected = layer(x)
        torch.manual_seed(1)
        assert torch.equal(clone(x), expected)
        assert torch.equal(clone.eval()(x), plain(x))


def test_under_torch_compile_fullgraph():
    layer = DropConnectLinear(6, 4, p=0.5)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 6)
    torch.manual_seed(2)
    eager = layer(x)
    torch.manual_seed(2)
    assert torch.equal(compiled(x), eager)
    layer.eval()
    assert torch.equal(compiled(x), nn.functional.linear(x, layer.weight, layer.bias))
