"""Standout (Ba & Frey 2013) against its NumPy reference, its keep rates and its eval rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dropkit import reference
from dropkit.nn.learned.base import dropout_rates, regularization
from dropkit.nn.learned.standout import Standout
from dropkit.reference.standout import Standout as RefStandout
from tests.stats import assert_binomial, assert_within

# Matmul summation order differs between BLAS and NumPy: a few ulps, so an atol near zero.
TOL = {"rtol": 1e-12, "atol": 1e-14}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(alpha: float, beta: float, bias: bool = True) -> tuple[Standout, RefStandout]:
    """A float64 torch layer and a reference layer with the same parameters."""
    torch.manual_seed(0)
    layer = Standout(5, 4, alpha, beta, bias=bias, dtype=torch.float64)
    ref = RefStandout(5, 4, alpha, beta, bias=bias, rng=0)
    ref.params["weight"] = layer.weight.detach().numpy().copy()
    if bias:
        ref.params["bias"] = layer.bias.detach().numpy().copy()
    return layer, ref


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("alpha", "beta", "bias"), [(1.0, 0.0, True), (-2.5, 0.7, False)])
def test_forward_and_grads_equal_the_reference(alpha, beta, bias, training):
    """float64, same mask: y, dx, dW, db equal the reference layer's (train and eval)."""
    layer, ref = _pair(alpha, beta, bias)
    layer.train(training)
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    dout = torch.randn(2, 3, 4, dtype=torch.float64, generator=_gen(2))
    mask = torch.rand(2, 3, 4, generator=_gen(3)) < 0.6 if training else None
    y = layer(x, mask=mask)
    y.backward(dout)
    ref_mask = None if mask is None else mask.numpy()
    ref_y = ref.forward(x.detach().numpy(), training, mask=ref_mask)
    np.testing.assert_allclose(y.detach().numpy(), ref_y, **TOL)
    np.testing.assert_allclose(x.grad.numpy(), ref.backward(dout.numpy()), **TOL)
    np.testing.assert_allclose(layer.weight.grad.numpy(), ref.grads["weight"], **TOL)
    if bias:
        np.testing.assert_allclose(layer.bias.grad.numpy(), ref.grads["bias"], **TOL)
    assert y.detach().abs().sum() > 0  # not a vacuous comparison of zeros


@pytest.mark.parametrize("training", [True, False])
def test_torch_gradcheck_with_the_mask_held_fixed(training):
    layer = Standout(4, 3, alpha=1.5, beta=-0.3, dtype=torch.float64).train(training)
    x = torch.randn(6, 4, dtype=torch.float64, generator=_gen(4), requires_grad=True)
    mask = torch.rand(6, 3, generator=_gen(5)) < 0.5 if training else None
    params = {name: p.detach().clone().requires_grad_() for name, p in layer.named_parameters()}

    def run(x, weight, bias):
        return functional_call(layer, {"weight": weight, "bias": bias}, (x,), {"mask": mask})

    assert torch.autograd.gradcheck(run, (x, params["weight"], params["bias"]))


@pytest.mark.parametrize("training", [True, False])
def test_reference_gradcheck(training):
    ref = RefStandout(4, 3, alpha=0.8, beta=0.2, rng=6)
    x = np.random.default_rng(7).standard_normal((5, 4))
    assert reference.gradcheck(ref, x, training=training)


def test_reference_gradcheck_catches_a_wrong_backward():
    """The checker can fail: dropping the π-derivative term of the eval backward is caught."""

    class Wrong(RefStandout):
        def backward(self, dout):
            self.alpha, alpha = 0.0, self.alpha  # removes the h·α·π(1−π) term only
            try:
                return super().backward(dout)
            finally:
                self.alpha = alpha

    x = np.random.default_rng(7).standard_normal((5, 4))
    assert not reference.gradcheck(Wrong(4, 3, alpha=0.8, beta=0.2, rng=6), x, training=False)


def test_keep_rate_follows_the_current_input():
    """W = 1, b = 0, α = 1: rows with x = +2 keep units with π = σ(2), rows with x = −2 with
    σ(−2); identity activation so every kept unit is visible as a non-zero output."""
    layer = Standout(1, 50, alpha=1.0, beta=0.0, bias=False, activation=nn.Identity())
    nn.init.ones_(layer.weight)
    x = torch.cat([torch.full((2000, 1), 2.0), torch.full((2000, 1), -2.0)])
    torch.manual_seed(8)
    with torch.no_grad():  # no gradient anywhere: the probabilities come from the input alone
        y = layer(x)
    for rows, pre in ((slice(0, 2000), 2.0), (slice(2000, None), -2.0)):
        kept = int((y[rows] != 0).sum())
        assert_binomial(kept, 2000 * 50, 1.0 / (1.0 + math.exp(-pre)), f"kept units at a={pre}")
    assert float(layer.rates()["keep_probability"]) == pytest.approx(0.5, abs=1e-6)


def test_keep_fraction_equals_mean_keep_probability():
    """Random weights: the kept count is a Poisson-binomial with mean Σπ, variance Σπ(1−π)."""
    torch.manual_seed(9)
    layer = Standout(6, 40, alpha=2.0, beta=0.5, activation=torch.exp)  # exp > 0: mask visible
    x = torch.randn(500, 6)
    y = layer(x)
    with torch.no_grad():
        prob = torch.sigmoid(2.0 * nn.functional.linear(x, layer.weight, layer.bias) + 0.5)
    prob = prob.double()
    kept = float((y != 0).sum())
    assert_within(kept, float(prob.sum()), float((prob * (1 - prob)).sum().sqrt()), "kept")
    keep_probability = layer.rates()["keep_probability"]
    assert float(keep_probability) == pytest.approx(float(prob.mean()), rel=1e-5)
    assert layer.p == pytest.approx(1.0 - float(prob.mean()), rel=1e-5)


def test_eval_is_the_expectation():
    torch.manual_seed(10)
    layer = Standout(5, 4, alpha=0.7, beta=-0.2, dtype=torch.float64).eval()
    x = torch.randn(8, 5, dtype=torch.float64)
    pre = x @ layer.weight.T + layer.bias
    expected = torch.sigmoid(0.7 * pre - 0.2) * torch.relu(pre)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(layer(x), layer(x), rtol=0, atol=0)  # deterministic


def test_mask_does_not_depend_on_gradients():
    """Same seed, same input: the output is the same whether or not x requires grad."""
    layer = Standout(5, 7)
    x = torch.randn(30, 5)
    torch.manual_seed(11)
    plain = layer(x)
    torch.manual_seed(11)
    tracked = layer(x.clone().requires_grad_())
    torch.testing.assert_close(plain, tracked, rtol=0, atol=0)


def test_same_init_as_linear_and_protocol():
    torch.manual_seed(0)
    plain = nn.Linear(7, 3)
    torch.manual_seed(0)
    layer = Standout(7, 3)
    assert torch.equal(layer.weight, plain.weight)
    assert torch.equal(layer.bias, plain.bias)
    assert math.isnan(float(layer.rates()["keep_probability"]))  # before the first forward
    model = nn.Sequential(layer, nn.Linear(3, 1))
    model(torch.randn(4, 7)).sum().backward()
    assert regularization(model).item() == 0.0
    assert layer.regularization().shape == ()
    assert set(dropout_rates(model)) == {"0"}
    assert set(layer.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize("name", ["alpha", "beta"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_alpha_beta_must_be_finite(name, bad):
    with pytest.raises(ValueError, match=rf"Standout: {name} must be a finite real number"):
        Standout(3, 2, **{name: bad})
    layer = Standout(3, 2)
    with pytest.raises(ValueError, match=name):
        setattr(layer, name, bad)
    with pytest.raises(ValueError, match=name):
        RefStandout(3, 2, **{name: bad})


def test_bad_arguments():
    with pytest.raises(TypeError, match="alpha must be a finite real number, got 'x'"):
        Standout(3, 2, alpha="x")
    with pytest.raises(TypeError, match="beta"):
        Standout(3, 2, beta=True)
    with pytest.raises(ValueError, match="in_features must be an integer >= 1, got in_features=0"):
        Standout(0, 2)
    with pytest.raises(TypeError, match="activation must be callable"):
        Standout(3, 2, activation="relu")
    layer = Standout(3, 2)
    with pytest.raises(ValueError, match=r"mask has shape \(4, 3\), expected the output shape"):
        layer(torch.ones(4, 3), mask=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1"):
        layer(torch.ones(4, 3), mask=torch.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="only used in training"):
        layer.eval()(torch.ones(4, 3), mask=torch.ones(4, 2))
