"""gradcheck / gradient_errors: passes correct layers, fails wrong ones, holds masks fixed."""

from __future__ import annotations

import numpy as np
import pytest

from dropkit.reference import (
    DropBlock2d,
    DropConnectLinear,
    Dropout,
    Embedding,
    Layer,
    Linear,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    gradcheck,
    gradient_errors,
)


class DropoutWithoutScale(Dropout):
    """Wrong: backward forgets the 1/q scale."""

    def backward(self, dout):
        cache, dout = self._saved(dout)
        return np.where(cache["keep"], dout, 0.0)


class EvalForgetsQ(Dropout):
    """Wrong in eval only: standard dropout's eval backward forgets the factor q."""

    def backward(self, dout):
        if self._cache is not None and self._cache["keep"] is None:
            return np.asarray(dout)
        return super().backward(dout)


class LinearTransposedGrad(Linear):
    """Wrong: weight gradient transposed (x^T dy instead of dy^T x)."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["weight"] = self.grads["weight"].T.copy()
        return dx


class LinearMeanBiasGrad(Linear):
    """Wrong: bias gradient averaged over the batch instead of summed."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["bias"] = self.grads["bias"] / dout.shape[0]
        return dx


class NoInputGrad(Layer):
    """Wrong: y = 2x, but backward returns None."""

    def forward(self, x, training=True):
        self._save(np.shape(x))
        return 2 * x

    def backward(self, dout):
        return None


class WrongShapeGrad(NoInputGrad):
    """Wrong: backward returns dx with the wrong shape."""

    def backward(self, dout):
        return 2 * dout.ravel()


class SignFlipGrad(NoInputGrad):
    """Wrong: backward has the wrong sign."""

    def backward(self, dout):
        return -2 * dout


def _x(shape=(4, 6), seed=1):  # not 0: gradcheck draws dout with seed 0
    return np.random.default_rng(seed).standard_normal(shape)


def _with_bias(layer):
    layer.params["bias"][:] = np.linspace(-1.0, 1.0, layer.params["bias"].size)
    return layer


@pytest.mark.parametrize(
    ("layer", "x"),
    [
        (_with_bias(Linear(6, 5, rng=0)), _x()),
        (ReLU(), _x() + np.sign(_x()) * 0.1),  # away from the kink
        (Dropout(0.5, rng=0), _x()),
        (Dropout(0.5, inverted=False, rng=0), _x()),
        (_with_bias(DropConnectLinear(6, 5, 0.4, rng=0)), _x()),
        (DropBlock2d(0.3, 2, rng=0), _x((2, 2, 5, 6))),
        (Sequential(_with_bias(Linear(6, 7, rng=1)), ReLU(), Linear(7, 3, rng=2)), _x()),
    ],
)
def test_passes_correct_layers(layer, x):
    """Correct backward passes match central differences."""
    assert gradcheck(layer, x)
    errors = gradient_errors(layer, x)
    keys = [k for k in errors if not k.endswith(":scale")]
    assert all(errors[k] <= 1e-6 + 1e-5 * errors[f"{k}:scale"] for k in keys)


def test_passes_loss_layer_with_labels():
    """Extra positional args (labels) are passed to forward; integer labels are not checked."""
    logits = _x((5, 4))
    assert gradcheck(SoftmaxCrossEntropy(), logits, np.array([0, 1, 2, 3, 0]))


@pytest.mark.parametrize(
    ("layer", "bad_key"),
    [
        (DropoutWithoutScale(0.5, rng=0), "x"),
        (LinearTransposedGrad(6, 6, rng=0), "0.weight"),
        (LinearMeanBiasGrad(6, 3, rng=0), "0.bias"),
        (NoInputGrad(), "x"),
        (WrongShapeGrad(), "x"),
        (SignFlipGrad(), "x"),
    ],
)
def test_fails_wrong_backward(layer, bad_key):
    """A deliberately wrong backward makes gradcheck return False, blamed on the right key."""
    x = _x()
    assert not gradcheck(layer, x)
    errors = gradient_errors(layer, x)
    assert errors[bad_key] > 1e-3 * max(errors[f"{bad_key}:scale"], 1.0)
    others = [k for k in errors if not k.endswith(":scale") and k != bad_key]
    assert all(errors[k] <= 1e-6 + 1e-5 * errors[f"{k}:scale"] for k in others)


@pytest.mark.parametrize("layer_cls", [NoInputGrad, WrongShapeGrad])
def test_missing_or_misshapen_gradient_is_infinite(layer_cls):
    """No dx, or dx of the wrong shape, is reported as an infinite error."""
    assert gradient_errors(layer_cls(), _x())["x"] == float("inf")


def test_tolerance_rule_is_atol_plus_rtol_times_scale():
    """Missing 1/q at q = 0.5 is off by exactly scale/2: fails at rtol 0.4, passes at rtol 0.6."""
    layer, x = DropoutWithoutScale(0.5, rng=0), _x()
    errors = gradient_errors(layer, x)
    assert errors["x"] == pytest.approx(errors["x:scale"] / 2, rel=1e-6)
    assert not gradcheck(layer, x, rtol=0.4)
    assert gradcheck(layer, x, rtol=0.6)


def test_masks_are_held_fixed():
    """Dropout(p=0.5) passes although every fresh forward draws a new mask."""
    layer, x = Dropout(0.5, rng=0), _x((8, 8))
    first = layer.forward(x)
    assert not np.array_equal(first, layer.forward(x))
    assert gradcheck(layer, x)


def test_shared_generator_in_sequential_is_replayed():
    """Two Dropout layers sharing one Generator still pass (the generator is restored once)."""
    rng = np.random.default_rng(0)
    model = Sequential(
        _with_bias(Linear(6, 8, rng=1)),
        Dropout(0.5, rng=rng),
        ReLU(),
        Linear(8, 8, rng=2),
        Dropout(0.5, rng=rng),
    )
    assert model.layers[1].rng is model.layers[4].rng
    assert gradcheck(model, _x())


def test_eval_mode_is_checked():
    """training=False checks the eval path (identity for inverted dropout, q*x otherwise)."""
    assert gradcheck(Dropout(0.5, inverted=False, rng=0), _x(), training=False)
    assert gradcheck(Dropout(0.5, rng=0), _x(), training=False)
    assert gradcheck(EvalForgetsQ(0.5, inverted=False, rng=0), _x(), training=True)
    assert not gradcheck(EvalForgetsQ(0.5, inverted=False, rng=0), _x(), training=False)


def test_keys_for_single_layer_and_scale_value():
    """Keys: "x", "0.weight", "0.bias" and their ":scale"; x:scale = max|dout @ W|."""
    layer, x = Linear(6, 5, rng=0), _x()
    errors = gradient_errors(layer, x, seed=3)
    assert set(errors) == {"x", "x:scale", "0.weight", "0.weight:scale", "0.bias", "0.bias:scale"}
    dout = np.random.default_rng(3).standard_normal((4, 5))
    assert errors["x:scale"] == pytest.approx(np.abs(dout @ layer.params["weight"]).max(), rel=1e-6)
    assert errors["0.bias:scale"] == pytest.approx(np.abs(dout.sum(axis=0)).max(), rel=1e-6)


def test_keys_are_indexed_by_module_position():
    """Parameters of a Sequential are named by their index in modules() (0 is the container)."""
    model = Sequential(Linear(6, 7, rng=1), ReLU(), Linear(7, 3, bias=False, rng=2))
    errors = gradient_errors(model, _x())
    assert {k for k in errors if not k.endswith(":scale")} == {
        "x",
        "1.weight",
        "1.bias",
        "3.weight",
    }


def test_integer_input_has_no_x_key():
    """Integer inputs (ids) are not differentiated: only the parameter keys appear."""
    errors = gradient_errors(Embedding(5, 3, rng=0), np.array([[0, 4], [2, 2]]))
    assert set(errors) == {"0.weight", "0.weight:scale"}
    assert errors["0.weight"] <= 1e-6


def test_inputs_and_params_are_left_unchanged():
    """gradcheck works on a copy of x and restores every perturbed parameter."""
    layer, x = _with_bias(Linear(6, 5, rng=0)), _x()
    x_before, w_before = x.copy(), layer.params["weight"].copy()
    gradcheck(layer, x)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(layer.params["weight"], w_before)
