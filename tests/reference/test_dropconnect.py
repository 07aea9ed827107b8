"""DropConnectLinear: Bernoulli mask on the weight matrix, rescaled by 1/q."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dropkit.reference import DropConnectLinear, gradcheck, gradient_errors
from tests.stats import assert_binomial, assert_within


def _layer(p: float, bias: bool = True, in_features: int = 4, out_features: int = 3, seed=0):
    layer = DropConnectLinear(in_features, out_features, p, bias, rng=seed)
    if bias:
        layer.params["bias"][:] = np.arange(1.0, out_features + 1)
    return layer


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_forward_backward_with_explicit_mask(p, lead):
    """y = x (W*M/q)^T + b; dx = dout (W*M/q); dW = (dout^T x)*M/q; db = sum dout."""
    rng = np.random.default_rng(1)
    layer = _layer(p)
    weight, bias = layer.params["weight"].copy(), layer.params["bias"].copy()
    mask = rng.random(weight.shape) < 0.5
    x = rng.standard_normal((*lead, 4))
    dout = rng.standard_normal((*lead, 3))
    q = 1.0 - p
    effective = weight * mask / q
    out = layer.forward(x, mask=mask)
    np.testing.assert_allclose(out, x @ effective.T + bias, rtol=1e-14)
    dx = layer.backward(dout)
    x2, d2 = x.reshape(-1, 4), dout.reshape(-1, 3)
    np.testing.assert_allclose(dx, dout @ effective, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["weight"], (d2.T @ x2) * mask / q, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], d2.sum(axis=0), rtol=1e-14)
    assert dx.shape == x.shape
    assert out.shape == (*lead, 3)


def test_eval_uses_plain_weights():
    """Eval: y = x W^T + b, dW = dout^T x, no mask involved."""
    rng = np.random.default_rng(2)
    layer = _layer(0.5)
    weight, bias = layer.params["weight"], layer.params["bias"]
    x, dout = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    np.testing.assert_allclose(layer.forward(x, training=False), x @ weight.T + bias, rtol=1e-14)
    np.testing.assert_allclose(layer.backward(dout), dout @ weight, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["weight"], dout.T @ x, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], dout.sum(axis=0), rtol=1e-14)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(p):
    """Each weight is kept with probability q = 1 - p, independently."""
    layer = DropConnectLinear(300, 200, p, rng=3)
    x = np.ones((1, 300))
    kept = trials = 0
    for _ in range(3):
        layer.forward(x)
        kept += int(layer.mask.sum())
        trials += layer.mask.size
    assert_binomial(kept, trials, 1.0 - p, f"kept weights at p={p}")


def test_masks_are_fresh_per_forward_and_reproducible():
    """Each forward draws a new mask; the same seed replays the same masks."""
    x = np.ones((2, 20))
    a, b = DropConnectLinear(20, 10, 0.5, rng=7), DropConnectLinear(20, 10, 0.5, rng=7)
    a.forward(x)
    first = a.mask.copy()
    a.forward(x)
    assert not np.array_equal(first, a.mask)
    b.forward(x)
    np.testing.assert_array_equal(first, b.mask)


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_mean_output_equals_eval_output(p):
    """E[y_train] = y_eval; per element Var = (p/q) * sum_i x_i^2 W_ji^2 (independent masks)."""
    rng = np.random.default_rng(4)
    layer = _layer(p, in_features=12, out_features=5, seed=5)
    x = rng.standard_normal((3, 12))
    expected = layer.forward(x, training=False)
    draws = 4000
    mean = sum(layer.forward(x) for _ in range(draws)) / draws
    q = 1.0 - p
    var = (p / q) * (x**2) @ (layer.params["weight"] ** 2).T
    sd = np.sqrt(var / draws)
    for idx in np.ndindex(expected.shape):
        assert_within(mean[idx], expected[idx], sd[idx], f"mean output {idx}")


def test_p_one_leaves_only_the_bias():
    """p = 1: output is the broadcast bias, zero dx and dW, no NaN."""
    layer = _layer(1.0)
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    with np.errstate(all="raise"):
        out = layer.forward(x)
        dx = layer.backward(np.ones((2, 3, 3)))
    np.testing.assert_array_equal(out, np.broadcast_to(layer.params["bias"], (2, 3, 3)))
    np.testing.assert_array_equal(dx, 0.0)
    np.testing.assert_array_equal(layer.grads["weight"], 0.0)
    np.testing.assert_array_equal(layer.grads["bias"], np.full(3, 6.0))


def test_p_zero_equals_linear():
    """p = 0: every weight kept, scale 1, identical to the eval output."""
    layer = _layer(0.0)
    x = np.random.default_rng(0).standard_normal((5, 4))
    np.testing.assert_array_equal(layer.forward(x), layer.forward(x, training=False))
    assert layer.mask is not None
    assert layer.mask.all()


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 5), ()])
def test_wrong_feature_size_raises(shape):
    """Input whose last dim is not in_features (or a 0-d input) names the shape (*, in)."""
    with pytest.raises(ValueError, match=re.escape("(*, 4)")):
        _layer(0.5).forward(np.ones(shape))


def test_mask_of_wrong_shape_raises():
    """An explicit mask must have the weight's shape (out, in)."""
    with pytest.raises(ValueError, match=re.escape("(3, 4)")):
        _layer(0.5).forward(np.ones((2, 4)), mask=np.ones((4, 3), dtype=bool))


@pytest.mark.parametrize("p", [-0.01, 1.01])
def test_bad_p_raises(p):
    """p outside [0, 1] is refused."""
    with pytest.raises(ValueError, match=re.escape("[0, 1]")):
        DropConnectLinear(4, 3, p)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7])
@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_gradcheck(p, lead):
    """Analytic gradients of x, weight and bias match finite differences in float64."""
    layer = _layer(p, seed=6)
    x = np.random.default_rng(8).standard_normal((*lead, 4))
    assert gradcheck(layer, x)
    errors = gradient_errors(layer, x)
    assert {"x", "0.weight", "0.bias"} <= errors.keys()


def test_gradcheck_in_eval():
    """Eval-mode gradients also match finite differences."""
    layer = _layer(0.5, seed=9)
    assert gradcheck(layer, np.random.default_rng(0).standard_normal((3, 4)), training=False)


def test_without_bias():
    """bias=False: no bias parameter or gradient, y = x (W*M/q)^T."""
    layer = _layer(0.5, bias=False)
    assert set(layer.params) == {"weight"}
    x = np.random.default_rng(0).standard_normal((5, 4))
    out = layer.forward(x)
    effective = layer.params["weight"] * layer.mask / 0.5
    np.testing.assert_allclose(out, x @ effective.T, rtol=1e-14)
    layer.backward(np.ones_like(out))
    assert set(layer.grads) == {"weight"}
    assert gradcheck(layer, x)


def test_init_std_and_float32():
    """init_std draws N(0, std^2) weights; dtype float32 gives float32 outputs and gradients."""
    layer = DropConnectLinear(400, 300, 0.5, init_std=0.02, rng=0, dtype=np.float32)
    weight = layer.params["weight"]
    assert weight.dtype == np.float32
    assert_within(float(weight.std()), 0.02, 0.02 / np.sqrt(2 * weight.size), "weight std")
    x = np.ones((2, 400), dtype=np.float32)
    out = layer.forward(x)
    assert out.dtype == np.float32
    layer.backward(np.ones_like(out))
    assert layer.grads["weight"].dtype == np.float32
