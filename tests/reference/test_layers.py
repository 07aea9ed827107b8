"""Deterministic reference layers: Linear, ReLU, SoftmaxCrossEntropy, Sequential and SGD."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dropkit.reference import (
    SGD,
    Dropout,
    Linear,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    gradcheck,
)
from tests.stats import assert_within


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("lead", [(5,), (2, 3)])
def test_linear_forward_backward(lead):
    """y = x W^T + b; dx = dy W; dW = dy^T x; db = sum dy over all leading dims."""
    rng = np.random.default_rng(0)
    layer = Linear(4, 3, rng=1)
    layer.params["bias"][:] = rng.standard_normal(3)
    w, b = layer.params["weight"], layer.params["bias"]
    x, dout = rng.standard_normal((*lead, 4)), rng.standard_normal((*lead, 3))
    np.testing.assert_allclose(layer.forward(x), x @ w.T + b, rtol=1e-14)
    np.testing.assert_allclose(layer.backward(dout), dout @ w, rtol=1e-14)
    x2, d2 = x.reshape(-1, 4), dout.reshape(-1, 3)
    np.testing.assert_allclose(layer.grads["weight"], d2.T @ x2, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["bias"], d2.sum(axis=0), rtol=1e-14)


@pytest.mark.parametrize("std", [0.01, 0.5])
def test_linear_init_std(std):
    """init_std: weights ~ N(0, std^2); sample std within 6 * std / sqrt(2n); zero bias."""
    layer = Linear(400, 300, init_std=std, rng=2)
    weight = layer.params["weight"]
    assert weight.shape == (300, 400)
    assert_within(float(weight.std()), std, std / np.sqrt(2 * weight.size), "weight std")
    np.testing.assert_array_equal(layer.params["bias"], 0.0)


def test_linear_default_init_is_uniform():
    """Default init: U(-1/sqrt(in), 1/sqrt(in)); E[W^2] = c^2/3 with Var(W^2) = 4 c^4 / 45."""
    layer = Linear(256, 300, rng=3)
    weight = layer.params["weight"]
    bound = 1.0 / np.sqrt(256)
    assert np.all(np.abs(weight) <= bound)
    sd = bound**2 * np.sqrt(4.0 / 45.0 / weight.size)
    assert_within(float(np.mean(weight**2)), bound**2 / 3, sd, "mean W^2")


def test_linear_without_bias_and_bad_input():
    """bias=False has only a weight; a wrong feature size names the expected shape."""
    layer = Linear(4, 3, bias=False, rng=0)
    assert set(layer.params) == {"weight"}
    x = np.ones((2, 4))
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["weight"].T, rtol=1e-14)
    with pytest.raises(ValueError, match=re.escape("(*, 4)")):
        layer.forward(np.ones((2, 5)))


def test_backward_guards():
    """backward before forward is a RuntimeError; dout of the wrong shape a ValueError."""
    layer = Linear(4, 3, rng=0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=re.escape("(2, 3)")):
        layer.backward(np.ones((3, 2)))


def test_relu_forward_backward():
    """ReLU: y = max(x, 0); dx = dy where x > 0 (0 at the kink)."""
    x = np.array([[-2.0, 0.0, 3.0], [1e-300, -1e-300, 5.0]])
    dout = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    layer = ReLU()
    np.testing.assert_array_equal(layer.forward(x), [[0.0, 0.0, 3.0], [1e-300, 0.0, 5.0]])
    np.testing.assert_array_equal(layer.backward(dout), [[0.0, 0.0, 3.0], [4.0, 0.0, 6.0]])


def test_cross_entropy_hand_computed():
    """Tiny case: L = mean(logsumexp(z) - z_y), checked against a closed form."""
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 1])
    expected = 0.5 * (np.log(1 + np.exp(-1.0) + np.exp(-2.0)) + np.log(3.0))
    loss = SoftmaxCrossEntropy().forward(logits, labels)
    assert loss.shape == ()
    assert float(loss) == pytest.approx(expected, rel=1e-14)


def test_cross_entropy_stable_for_huge_logits():
    """Logits of 1e4 neither overflow nor give NaN: L = (0 + 1e4 + log 2) / 2."""
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    layer = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = layer.forward(logits, np.array([0, 0]))
        grad = layer.backward()
    assert float(loss) == pytest.approx((1e4 + np.log(2.0)) / 2, rel=1e-14)
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [-0.5, 0.25, 0.25]], atol=1e-15)


@pytest.mark.parametrize("dout", [1.0, 2.5])
def test_cross_entropy_gradient(dout):
    """dz = (softmax(z) - onehot(y)) / N times the incoming scalar gradient."""
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    layer = SoftmaxCrossEntropy()
    layer.forward(logits, labels)
    expected = (_softmax(logits) - np.eye(4)[labels]) / 5 * dout
    np.testing.assert_allclose(layer.backward(dout), expected, rtol=1e-13, atol=1e-16)
    assert gradcheck(SoftmaxCrossEntropy(), logits, labels)


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0]])
def test_cross_entropy_labels_out_of_range(labels):
    """Labels outside [0, K) are refused with the allowed range in the message."""
    with pytest.raises(ValueError, match=re.escape("[0, 3)")):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array(labels))


def test_cross_entropy_bad_inputs():
    """Float labels are a TypeError; 1-D logits a ValueError naming (N, K)."""
    with pytest.raises(TypeError, match="integers"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=re.escape("(N, K)")):
        SoftmaxCrossEntropy().forward(np.zeros(3), np.array([0]))


def test_sequential_chains_forward_and_backward():
    """Sequential applies layers left to right and backward right to left."""
    rng = np.random.default_rng(0)
    l1, relu, l2 = Linear(4, 6, rng=1), ReLU(), Linear(6, 3, rng=2)
    model = Sequential(l1, relu, l2)
    x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    h = x @ l1.params["weight"].T + l1.params["bias"]
    np.testing.assert_allclose(
        model.forward(x), np.maximum(h, 0) @ l2.params["weight"].T, rtol=1e-14
    )
    dh = (dout @ l2.params["weight"]) * (h > 0)
    np.testing.assert_allclose(model.backward(dout), dh @ l1.params["weight"], rtol=1e-14)
    np.testing.assert_allclose(l1.grads["weight"], dh.T @ x, rtol=1e-14)
    assert list(model.modules()) == [model, l1, relu, l2]


def test_sequential_gradcheck_with_dropout():
    """Linear -> ReLU -> Dropout -> Linear passes gradcheck (mask held fixed), loss separately."""
    rng = np.random.default_rng(0)
    model = Sequential(
        Linear(5, 8, rng=1), ReLU(), Dropout(0.3, rng=2), Linear(8, 3, init_std=0.5, rng=3)
    )
    for layer in model.layers[::3]:
        layer.params["bias"][:] = rng.standard_normal(layer.params["bias"].shape)
    x = rng.standard_normal((4, 5))
    assert gradcheck(model, x)
    logits = model.forward(x)
    assert gradcheck(SoftmaxCrossEntropy(), logits, np.array([0, 2, 1, 2]))


def test_sequential_rejects_non_layers():
    """Sequential only takes reference layers."""
    with pytest.raises(TypeError, match="reference layers"):
        Sequential(Linear(2, 2), lambda x: x)


def test_sgd_one_step():
    """Plain SGD: param <- param - lr * grad, in place."""
    model = Sequential(Linear(3, 2, rng=0))
    layer = model.layers[0]
    weight = layer.params["weight"]
    before = weight.copy()
    model.forward(np.ones((4, 3)))
    model.backward(np.arange(8.0).reshape(4, 2))
    SGD(model, lr=0.1).step()
    assert layer.params["weight"] is weight
    np.testing.assert_array_equal(weight, before - 0.1 * layer.grads["weight"])
    np.testing.assert_array_equal(layer.params["bias"], -0.1 * layer.grads["bias"])


def test_sgd_momentum_two_steps():
    """Momentum: v1 = g1, v2 = mu v1 + g2; param -= lr * v each step."""
    layer = Linear(2, 2, rng=0)
    p0 = layer.params["weight"].copy()
    g1, g2 = np.array([[1.0, -2.0], [0.5, 3.0]]), np.array([[-1.0, 4.0], [2.0, 0.25]])
    opt = SGD(layer, lr=0.1, momentum=0.9)
    layer.grads = {"weight": g1, "bias": np.zeros(2)}
    opt.step()
    np.testing.assert_allclose(layer.params["weight"], p0 - 0.1 * g1, rtol=1e-15)
    layer.grads = {"weight": g2, "bias": np.zeros(2)}
    opt.step()
    expected = p0 - 0.1 * g1 - 0.1 * (0.9 * g1 + g2)
    np.testing.assert_allclose(layer.params["weight"], expected, rtol=1e-14)


def test_sgd_step_before_backward_raises():
    """step() without gradients is a RuntimeError."""
    with pytest.raises(RuntimeError, match="backward"):
        SGD(Linear(2, 2), lr=0.1).step()


@pytest.mark.parametrize(
    ("lr", "momentum", "match"),
    [(0.0, 0.0, "lr"), (-1.0, 0.0, "lr"), (0.1, 1.0, "momentum"), (0.1, -0.1, "momentum")],
)
def test_sgd_bad_hyperparameters(lr, momentum, match):
    """lr must be > 0 and momentum in [0, 1)."""
    with pytest.raises(ValueError, match=match):
        SGD(Linear(2, 2), lr=lr, momentum=momentum)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_training_reduces_loss(momentum):
    """A tiny network trained with SGD fits a linearly separable problem."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2))
    labels = (x @ np.array([1.0, -2.0]) > 0).astype(np.int64)
    model = Sequential(Linear(2, 16, rng=1), ReLU(), Dropout(0.1, rng=2), Linear(16, 2, rng=3))
    loss_fn, opt = SoftmaxCrossEntropy(), SGD(model, lr=0.2, momentum=momentum)
    first = float(loss_fn.forward(model.forward(x, training=False), labels))
    for _ in range(200):
        loss_fn.forward(model.forward(x), labels)
        model.backward(loss_fn.backward())
        opt.step()
    logits = model.forward(x, training=False)
    final = float(loss_fn.forward(logits, labels))
    assert final < 0.25 * first
    assert np.mean(logits.argmax(axis=1) == labels) >= 0.95


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_gradient_keeps_logits_dtype(dtype):
    """The logits gradient has the logits' dtype (no silent float64 promotion)."""
    loss = SoftmaxCrossEntropy()
    loss.forward(np.zeros((2, 3), dtype=dtype), np.array([0, 2]))
    assert loss.backward(1.0).dtype == dtype
