"""SparseVDLinear / SparseVDConv2d reference layers (Molchanov et al. 2017): hand formulas,
finite differences, agreement with the torch layers in float64, LRT moments and bad inputs.

Statistical checks use 6-sigma intervals (tests/stats.py) with fixed seeds.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dropkit.nn.learned import sparse_vd as torch_svd
from dropkit.reference import (
    Layer,
    SparseVDConv2d,
    SparseVDLinear,
    gradcheck,
    gradient_errors,
    sparse_vd_kl,
)
from dropkit.reference.sparse_vd import EPS, K1, LOG_ALPHA_RANGE
from tests.stats import assert_within

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-14}
#: θ with θ² + 1e-8 == 1.0 exactly in float64, so log α == log σ² bit for bit in both libraries.
UNIT_THETA = 0.999999995
#: Conv configurations: (kwargs, input shape); the last one is unbatched.
CONVS = [
    ({}, (2, 4, 6, 5)),
    ({"stride": 2, "padding": 1}, (2, 4, 6, 5)),
    ({"stride": (2, 1), "padding": (0, 2), "dilation": 2}, (2, 4, 7, 5)),
    ({"groups": 2, "padding": 1}, (2, 4, 5, 5)),
    ({"groups": 4, "bias": False}, (4, 5, 5)),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one torch thread is faster and fair to a shared runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spread(layer, low: float = -13.0, high: float = 13.0, seed: int = 0, exact: bool = False):
    """θ ~ N(0, 0.5²) and log σ² chosen so that the unclipped log α runs evenly over [low, high]
    in a shuffled order, more than 1e-3 away from the clip bounds and the threshold (finite
    differences must not cross a kink). ``exact``: the first three weights get log α exactly 10,
    −10 and 3 (θ = UNIT_THETA), to pin the conventions at the bounds and the threshold."""
    rng = np.random.default_rng(seed)
    shape = layer.params["weight"].shape
    n = math.prod(shape)
    targets = np.linspace(low, high, n)[rng.permutation(n)] + 0.0137
    kinks = np.array([*LOG_ALPHA_RANGE, layer.threshold])
    assert np.abs(targets[:, None] - kinks).min() > 1e-3
    theta = 0.5 * rng.standard_normal(n)
    log_sigma2 = targets + np.log(theta * theta + EPS)
    if exact:
        theta[:3] = [UNIT_THETA, -UNIT_THETA, UNIT_THETA]
        log_sigma2[:3] = [10.0, -10.0, 3.0]
    layer.params["weight"] = theta.reshape(shape)
    layer.params["log_sigma2"] = log_sigma2.reshape(shape)
    if "bias" in layer.params:
        layer.params["bias"] = rng.standard_normal(shape[0])
    return layer


def _x(shape, seed: int = 1) -> np.ndarray:  # not 0: gradcheck draws dout with seed 0
    return np.random.default_rng(seed).standard_normal(shape)


def _passes(errors: dict[str, float], key: str) -> bool:
    """gradcheck's default rule for one key."""
    return errors[key] <= 1e-6 + 1e-5 * errors[f"{key}:scale"]


class KLTerm(Layer):
    """Test harness: a layer whose output is ``inner.regularization()`` (0-d, independent of x)
    and whose backward is ``inner.regularization_backward``, so that gradcheck's finite
    differences check the regulariser's gradient for every parameter."""

    def __init__(self, inner: Layer) -> None:
        super().__init__()
        self.inner = inner

    def children(self) -> list[Layer]:
        return [self.inner]

    def forward(self, x, training: bool = True) -> np.ndarray:
        self._save((), x_shape=np.shape(x))
        return np.asarray(self.inner.regularization())

    def backward(self, dout) -> np.ndarray:
        cache, dout = self._saved(dout)
        self.inner.grads = {name: np.zeros_like(v) for name, v in self.inner.params.items()}
        self.inner.regularization_backward(float(dout))
        return np.zeros(cache["x_shape"])


# -- hand formulas ---------------------------------------------------------------------------
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_linear_formulas_with_given_noise(lead):
    """Train: y = xθᵀ + b + sqrt(x²σ²ᵀ + 1e-8) ε; dx, dθ, dlog σ², db as in the docstring.
    Eval: y = x(θ ⊙ [log α < 3])ᵀ + b, dθ masked, dlog σ² = 0."""
    layer = _spread(SparseVDLinear(4, 3, rng=0))
    theta, log_sigma2, b = (layer.params[k] for k in ("weight", "log_sigma2", "bias"))
    sigma2 = np.exp(log_sigma2)
    x, eps, dout = _x((*lead, 4)), _x((*lead, 3), 2), _x((*lead, 3), 3)
    std = np.sqrt((x * x) @ sigma2.T + EPS)
    np.testing.assert_allclose(layer.forward(x, noise=eps), x @ theta.T + b + std * eps, **TOL)
    np.testing.assert_array_equal(layer.noise, eps)
    g = dout * eps / (2 * std)
    x2, d2, g2 = x.reshape(-1, 4), dout.reshape(-1, 3), g.reshape(-1, 3)
    np.testing.assert_allclose(layer.backward(dout), dout @ theta + 2 * x * (g @ sigma2), **TOL)
    np.testing.assert_allclose(layer.grads["weight"], d2.T @ x2, **TOL)
    np.testing.assert_allclose(layer.grads["log_sigma2"], sigma2 * (g2.T @ x2**2), **TOL)
    np.testing.assert_allclose(layer.grads["bias"], d2.sum(axis=0), **TOL)

    keep = layer.log_alpha < 3.0
    assert 0 < keep.sum() < keep.size
    out = layer.forward(x, training=False)
    np.testing.assert_allclose(out, x @ (theta * keep).T + b, **TOL)
    np.testing.assert_allclose(layer.backward(dout), dout @ (theta * keep), **TOL)
    np.testing.assert_allclose(layer.grads["weight"], (d2.T @ x2) * keep, **TOL)
    np.testing.assert_array_equal(layer.grads["log_sigma2"], 0.0)


def test_log_alpha_keep_mask_sparsity_and_rates():
    """log α is clipped to [−10, 10]; weights at or above the threshold are pruned."""
    layer = _spread(SparseVDLinear(5, 4, rng=0), exact=True)
    theta, log_sigma2 = layer.params["weight"], layer.params["log_sigma2"]
    raw = log_sigma2 - np.log(theta**2 + 1e-8)
    np.testing.assert_array_equal(layer.log_alpha, np.clip(raw, -10.0, 10.0))
    assert layer.log_alpha.flat[2] == 3.0
    assert not layer.keep_mask().flat[2]  # exactly at the threshold: pruned
    np.testing.assert_array_equal(layer.keep_mask(), layer.log_alpha < 3.0)
    assert layer.sparsity() == pytest.approx(np.mean(layer.log_alpha >= 3.0), abs=1e-15)
    np.testing.assert_array_equal(layer.rates()["log_alpha"], layer.log_alpha)
    with pytest.raises(AttributeError):  # derived from the parameters: read-only
        layer.log_alpha = raw
    layer.threshold = 10.5
    assert layer.sparsity() == 0.0
    layer.threshold = -10.0
    assert layer.sparsity() == 1.0
    fresh = SparseVDLinear(5, 4, rng=0)
    np.testing.assert_array_equal(fresh.params["log_sigma2"], -10.0)
    bound = 1 / math.sqrt(5)
    assert np.abs(fresh.params["weight"]).max() <= bound
    assert np.abs(fresh.params["bias"]).max() <= bound


def test_kl_values_and_limits():
    """KL(log α) by hand at log α = 0; → 0 as α → ∞; → k1 − log α / 2 as α → 0; decreasing."""
    kl, grad = sparse_vd_kl(np.array([0.0]))
    sig = 1 / (1 + math.exp(-1.87320))
    assert kl[0] == pytest.approx(K1 - K1 * sig + 0.5 * math.log(2), rel=1e-14)
    assert grad[0] == pytest.approx(-K1 * 1.48695 * sig * (1 - sig) - 0.25, rel=1e-14)
    kl, grad = sparse_vd_kl(np.linspace(-40, 40, 161))
    assert (np.diff(kl) < 0).all()
    assert (grad < 0).all()
    assert abs(kl[-1]) < 1e-12
    assert kl[0] == pytest.approx(K1 + 20.0, abs=1e-12)


# -- finite differences ----------------------------------------------------------------------
def _linear(bias: bool = True) -> SparseVDLinear:
    return SparseVDLinear(5, 4, bias, rng=0)


# (id, factory, input shape): every factory builds a fresh layer (the noise generator included).
CASES = [
    ("linear", _linear, (3, 5)),
    ("linear-3d-no-bias", lambda: _linear(bias=False), (2, 3, 5)),
    *(
        (f"conv-{i}", lambda kw=kwargs: SparseVDConv2d(4, 4, 3, **kw, rng=0), shape)
        for i, (kwargs, shape) in enumerate(CONVS)
    ),
]
LAYERS = pytest.mark.parametrize(
    ("make", "shape"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)


@LAYERS
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(make, shape, training):
    """dx, dθ, dlog σ², db against central differences in float64, the noise held fixed (the
    generator is replayed); log α spread over [−13, 13] so eval prunes some weights."""
    layer = _spread(make())
    assert 0.0 < layer.sparsity() < 1.0
    errors = gradient_errors(layer, _x(shape), training=training)
    keys = [k for k in errors if not k.endswith(":scale")]
    assert keys == ["x", *(f"0.{name}" for name in layer.params)]
    assert all(_passes(errors, k) for k in keys), errors
    if not training:
        assert errors["0.log_sigma2:scale"] == 0.0  # the pruning mask is a step: no gradient


@LAYERS
def test_regularization_gradcheck(make, shape):
    """The KL's gradient in θ and log σ² against central differences, with some of the
    weights beyond the clip bounds (there both are exactly 0) and none at a kink. About a
    quarter: |log α| > 10 on 6 of the 26 units of the spread."""
    layer = _spread(make())
    clipped = np.abs(layer.log_alpha) == 10.0
    assert clipped.any()
    assert gradcheck(KLTerm(layer), _x(shape))
    assert layer.grads["log_sigma2"].shape == layer.params["weight"].shape
    assert (layer.grads["log_sigma2"][clipped] == 0).all()
    assert (layer.grads["weight"][clipped] == 0).all()
    assert (layer.grads["log_sigma2"][~clipped] != 0).all()


def test_regularization_backward_accumulates():
    """regularization_backward adds scale × dKL to what backward left in grads."""
    layer = _spread(SparseVDLinear(5, 4, rng=0))
    x = _x((3, 5))
    layer.forward(x)
    layer.backward(np.ones((3, 4)))
    data = {k: v.copy() for k, v in layer.grads.items()}
    layer.regularization_backward(0.25)
    kl_only = SparseVDLinear(5, 4, rng=0)
    kl_only.params = layer.params
    kl_only.regularization_backward()
    assert set(kl_only.grads) == {"weight", "log_sigma2"}  # started from zeros
    for name in ("weight", "log_sigma2"):
        np.testing.assert_allclose(layer.grads[name], data[name] + 0.25 * kl_only.grads[name])
    np.testing.assert_array_equal(layer.grads["bias"], data["bias"])


class ForgetsVarianceInX(SparseVDLinear):
    """Wrong: dx drops the 2x ⊙ (g σ²) term of the variance path."""

    def backward(self, dout):
        super().backward(dout)
        return dout @ self.params["weight"]


class GradOfSigma2(SparseVDLinear):
    """Wrong: returns dL/dσ² as the gradient of log σ² (forgets the σ² chain factor)."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["log_sigma2"] = self.grads["log_sigma2"] / np.exp(self.params["log_sigma2"])
        return dx


class EvalUnmasked(SparseVDLinear):
    """Wrong in eval: the weight gradient is not masked by the pruning."""

    def backward(self, dout):
        dx = super().backward(dout)
        x2 = self._cache["cols"].reshape(-1, self.in_features)
        self.grads["weight"] = dout.reshape(-1, self.out_features).T @ x2
        return dx


class KLIgnoresClip(SparseVDLinear):
    """Wrong: the KL gradient flows through the clip of log α."""

    def regularization_backward(self, scale=1.0):
        theta = self.params["weight"]
        d = scale * sparse_vd_kl(self._raw_log_alpha())[1]
        self.grads["log_sigma2"] += d
        self.grads["weight"] += -d * 2 * theta / (theta**2 + EPS)


@pytest.mark.parametrize(
    ("make", "training", "bad_keys"),
    [
        (lambda: ForgetsVarianceInX(5, 4, rng=0), True, {"x"}),
        (lambda: GradOfSigma2(5, 4, rng=0), True, {"0.log_sigma2"}),
        (lambda: EvalUnmasked(5, 4, rng=0), False, {"0.weight"}),
        (lambda: KLTerm(KLIgnoresClip(5, 4, rng=0)), True, {"1.weight", "1.log_sigma2"}),
    ],
)
def test_wrong_backward_is_caught(make, training, bad_keys):
    """A deliberately wrong backward fails gradcheck, blamed on the right gradients only."""
    layer = make()
    _spread(layer.inner if isinstance(layer, KLTerm) else layer)
    x = _x((3, 5))
    assert not gradcheck(layer, x, training=training)
    errors = gradient_errors(layer, x, training=training)
    keys = {k for k in errors if not k.endswith(":scale")}
    assert {k for k in keys if not _passes(errors, k)} == bad_keys
    assert all(errors[k] > 1e-3 * max(errors[f"{k}:scale"], 1.0) for k in bad_keys)


# -- agreement with the torch layers ---------------------------------------------------------
def _torch_twin(reference, make_torch):
    module = make_torch()
    with torch.no_grad():
        for name, value in module.named_parameters():
            value.copy_(torch.from_numpy(reference.params[name]))
    return module


def _assert_matches_torch(reference, module, x_np, seed: int) -> None:
    """Train (same ε) and eval: y, dx, every parameter gradient; then the KL and its gradient,
    log α, the keep mask and the sparsity."""
    for training in (True, False):
        module.train(training)
        x = torch.from_numpy(x_np).requires_grad_()
        module.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        y = module(x)
        torch.manual_seed(seed)  # the layer's one draw is randn_like(mean): replay it
        eps = torch.randn(y.shape, dtype=F64).numpy() if training else None
        dout = _x(tuple(y.shape), 5)
        y.backward(torch.from_numpy(dout))
        what = "train" if training else "eval"
        out = reference.forward(x_np, training, noise=eps)
        np.testing.assert_allclose(out, y.detach().numpy(), **TOL, err_msg=f"{what} y")
        np.testing.assert_allclose(x.grad.numpy(), reference.backward(dout), **TOL, err_msg=what)
        for name, value in module.named_parameters():
            # eval: torch leaves log σ² without a gradient (None), the reference gives zeros
            expected = np.zeros(value.shape) if value.grad is None else value.grad.numpy()
            np.testing.assert_allclose(reference.grads[name], expected, **TOL, err_msg=name)
    module.zero_grad(set_to_none=True)
    reg = module.regularization()
    reg.backward()
    np.testing.assert_allclose(reference.regularization(), reg.item(), **TOL)
    reference.grads = {}
    reference.regularization_backward()
    for name in ("weight", "log_sigma2"):
        grad = getattr(module, name).grad.numpy()
        np.testing.assert_allclose(reference.grads[name], grad, **TOL, err_msg=f"KL {name}")
    np.testing.assert_array_equal(reference.log_alpha, module.log_alpha.detach().numpy())
    np.testing.assert_array_equal(reference.keep_mask(), module.keep_mask().numpy())
    assert reference.sparsity() == module.sparsity()


def _check_setup(reference) -> None:
    """The weights cover every case: pruned, kept, clipped above and below, and exactly at both
    bounds (where torch's clamp passes the gradient) and at the threshold (pruned)."""
    theta, log_sigma2 = reference.params["weight"], reference.params["log_sigma2"]
    raw = log_sigma2 - np.log(theta**2 + EPS)
    assert (raw > 10).any()
    assert (raw < -10).any()
    assert reference.log_alpha.max() > 3.0
    assert reference.log_alpha.min() < 3.0
    assert list(raw.flat[:3]) == [10.0, -10.0, 3.0]
    reference.regularization_backward()
    assert (reference.grads["log_sigma2"].flat[:2] != 0).all()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(6,), (2, 3), ()])
def test_linear_equals_torch(bias, lead):
    """float64, rtol 1e-12: forward, backward and KL of SparseVDLinear, train and eval."""
    reference = _spread(SparseVDLinear(5, 4, bias, rng=0), exact=True)
    _check_setup(reference)
    module = _torch_twin(reference, lambda: torch_svd.SparseVDLinear(5, 4, bias, dtype=F64))
    _assert_matches_torch(reference, module, _x((*lead, 5)), seed=11)


@pytest.mark.parametrize(("kwargs", "shape"), CONVS)
def test_conv_equals_torch(kwargs, shape):
    """float64, rtol 1e-12: SparseVDConv2d against torch's (stride, padding, dilation, groups,
    no bias, unbatched input)."""
    reference = _spread(SparseVDConv2d(4, 4, 3, **kwargs, rng=0), exact=True)
    _check_setup(reference)
    module = _torch_twin(reference, lambda: torch_svd.SparseVDConv2d(4, 4, 3, **kwargs, dtype=F64))
    _assert_matches_torch(reference, module, _x(shape), seed=12)


def test_kl_equals_torch_beyond_the_clip():
    """sparse_vd_kl and its derivative equal torch's on log α in [−40, 40] (past softplus's
    threshold of 20, where torch switches to the identity)."""
    grid = np.linspace(-40.0, 40.0, 321)
    log_alpha = torch.from_numpy(grid).requires_grad_()
    kl = torch_svd.sparse_vd_kl(log_alpha)
    kl.sum().backward()
    value, grad = sparse_vd_kl(grid)
    np.testing.assert_allclose(value, kl.detach().numpy(), **TOL)
    np.testing.assert_allclose(grad, log_alpha.grad.numpy(), **TOL)


# -- statistics -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_training_output_moments(kind):
    """Over n = 20 000 independent draws each training output is N(μ, v), v = s² + 1e-8: its
    sample mean lies within 6 sqrt(v / n) of μ and its sample variance within
    6 v sqrt(2 / (n − 1)) of v (every element checked; tests/stats.py). μ and s² are computed
    independently of the layer, with numpy (linear) or torch's conv2d (conv)."""
    n = 20_000
    if kind == "linear":
        layer, x = SparseVDLinear(5, 4, rng=0), _x((1, 3, 5))
    else:
        layer, x = SparseVDConv2d(2, 3, 3, stride=2, padding=1, rng=0), _x((1, 2, 4, 4))
    shape = layer.params["weight"].shape
    layer.params["log_sigma2"] = np.random.default_rng(4).uniform(-3.0, 0.0, shape)
    theta, bias = layer.params["weight"], layer.params["bias"]
    sigma2 = np.exp(layer.params["log_sigma2"])
    if kind == "linear":
        mean, var = x[0] @ theta.T + bias, x[0] ** 2 @ sigma2.T + EPS
    else:
        conv = torch.nn.functional.conv2d
        t = torch.from_numpy
        mean = conv(t(x), t(theta), t(bias), stride=2, padding=1)[0].numpy()
        var = conv(t(x**2), t(sigma2), stride=2, padding=1)[0].numpy() + EPS
    samples = layer.forward(np.repeat(x, n, axis=0))  # independent noise for every copy
    assert samples.shape == (n, *mean.shape)
    for i, (mu, v, column) in enumerate(
        zip(mean.ravel(), var.ravel(), samples.reshape(n, -1).T, strict=True)
    ):
        assert_within(column.mean(), mu, math.sqrt(v / n), f"{kind} mean [{i}]")
        assert_within(column.var(ddof=1), v, v * math.sqrt(2 / (n - 1)), f"{kind} var [{i}]")


# -- bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"in_channels": 0}, "in_channels must be an integer >= 1, got in_channels=0"),
        ({"out_channels": -1}, "out_channels must be an integer >= 1, got out_channels=-1"),
        ({"kernel_size": 0}, "kernel_size must be an integer >= 1 or a pair of them, got 0"),
        ({"stride": 0}, "stride must be an integer >= 1"),
        ({"padding": -1}, "padding must be an integer >= 0"),
        ({"dilation": (1, 0)}, "dilation"),
        ({"groups": 3}, "groups must divide in_channels and out_channels, got groups=3"),
        ({"threshold": math.nan}, "threshold (a log α) must be a finite real number, got nan"),
        ({"threshold": -math.inf}, "threshold (a log α) must be a finite real number, got -inf"),
    ],
)
def test_bad_conv_arguments_match_torch(change, message):
    """The same ValueError, with the same message, as the torch layer."""
    kwargs = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **change}
    pattern = re.escape(f"SparseVDConv2d: {message}")
    with pytest.raises(ValueError, match=pattern) as ours:
        SparseVDConv2d(**kwargs)
    with pytest.raises(ValueError, match=pattern) as theirs:
        torch_svd.SparseVDConv2d(**kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0, 2), {}, ValueError),
        ((3, -1), {}, ValueError),
        ((3, 2), {"threshold": math.inf}, ValueError),
        ((3, 2), {"threshold": "3"}, TypeError),
        ((3, 2), {"threshold": True}, TypeError),
    ],
)
def test_bad_linear_arguments_match_torch(args, kwargs, error):
    with pytest.raises(error) as ours:
        SparseVDLinear(*args, **kwargs)
    with pytest.raises(error) as theirs:
        torch_svd.SparseVDLinear(*args, **kwargs)
    assert str(ours.value) == str(theirs.value)
    assert str(ours.value).startswith("SparseVDLinear: ")


def test_threshold_is_checked_on_assignment():
    layer = SparseVDLinear(3, 2, rng=0)
    with pytest.raises(ValueError, match=re.escape("threshold (a log α) must be a finite")):
        layer.threshold = math.nan
    assert layer.threshold == 3.0


def test_bad_forward_and_backward_inputs():
    """Shape and dtype errors name the argument and the expected shape."""
    linear, conv = SparseVDLinear(4, 3, rng=0), SparseVDConv2d(2, 3, 3, rng=0)
    with pytest.raises(ValueError, match=re.escape("(*, 4), got shape (2, 5)")):
        linear.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match=re.escape("(N, 2, H, W) or (2, H, W)")):
        conv.forward(np.ones((1, 3, 5, 5)))
    with pytest.raises(ValueError, match=re.escape("(N, 2, H, W) or (2, H, W)")):
        conv.forward(np.ones((5, 5)))
    with pytest.raises(ValueError, match=r"padded input of size \(2, 5\) is smaller"):
        conv.forward(np.ones((1, 2, 2, 5)))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        linear.forward(np.ones((2, 4), dtype=int))
    with pytest.raises(ValueError, match=re.escape("noise has shape (3, 2), expected (2, 3)")):
        linear.forward(np.ones((2, 4)), noise=np.zeros((3, 2)))
    with pytest.raises(TypeError, match="noise must be a floating-point array"):
        linear.forward(np.ones((2, 4)), noise=np.zeros((2, 3), dtype=int))
    with pytest.raises(RuntimeError, match="before forward"):
        SparseVDLinear(4, 3, rng=0).backward(np.ones((2, 3)))
    linear.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=re.escape("dout has shape (3, 2)")):
        linear.backward(np.ones((3, 2)))
    linear.params["log_sigma2"] = np.zeros((3, 1))  # would broadcast silently
    with pytest.raises(ValueError, match=re.escape("params['log_sigma2'] has shape (3, 1)")):
        linear.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match="scale must be finite, got scale=nan"):
        linear.regularization_backward(math.nan)
    with pytest.raises(TypeError, match="scale must be a real number"):
        linear.regularization_backward(None)
