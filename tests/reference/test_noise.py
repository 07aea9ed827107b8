"""Noise-based dropout reference layers: GaussianDropout and AlphaDropout.

Statistical checks use 6-sigma intervals (tests/stats.py) with fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from dropkit.reference import (
    ALPHA_PRIME,
    AlphaDropout,
    FeatureAlphaDropout,
    GaussianDropout,
    alpha_dropout_affine,
    gradcheck,
)
from tests.stats import assert_binomial, assert_within

LAYERS = {"gaussian": GaussianDropout, "alpha": AlphaDropout}
BOTH = pytest.mark.parametrize("cls", list(LAYERS.values()), ids=list(LAYERS))
P_VALUES = pytest.mark.parametrize("p", [0.1, 0.5, 0.9])


def sample_variance_sd(var: float, n: int) -> float:
    """Standard deviation of the sample variance of n normal draws with variance ``var``."""
    return var * math.sqrt(2.0 / (n - 1))


# -- Gaussian dropout ------------------------------------------------------------------------
@P_VALUES
def test_gaussian_noise_has_mean_one_and_variance_p_over_q(p):
    """y/x ~ N(1, p/(1-p)): sample mean and sample variance within 6 sigma."""
    n, c = 10**6, 2.5
    layer = GaussianDropout(p, rng=21)
    y = layer.forward(np.full(n, c))
    noise = y / c
    var = p / (1.0 - p)
    assert_within(noise.mean(), 1.0, math.sqrt(var / n), "noise mean")
    assert_within(noise.var(ddof=1), var, sample_variance_sd(var, n), "noise variance")
    assert_allclose(layer.mask, noise, rtol=1e-15)
    assert layer.std == pytest.approx(math.sqrt(var), rel=1e-15)


def test_gaussian_forward_backward_exact_under_given_noise():
    """forward(x, mask=eps) = x*eps and backward(dout) = eps*dout, exactly."""
    gen = np.random.default_rng(22)
    x, eps, dout = (gen.standard_normal((4, 5)) for _ in range(3))
    layer = GaussianDropout(0.3, rng=0)
    assert np.array_equal(layer.forward(x, mask=eps), x * eps)
    assert np.array_equal(layer.backward(dout), eps * dout)
    assert np.array_equal(layer.mask, eps)


def test_gaussian_p_zero_is_identity_in_training():
    """p = 0: the noise variance is 0, so training output equals the input."""
    x = np.random.default_rng(23).standard_normal((3, 4))
    layer = GaussianDropout(0.0, rng=0)
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(x), x)


@pytest.mark.parametrize("p", [1.0, 1])
def test_gaussian_p_one_is_rejected(p):
    """p = 1 means infinite noise variance: ValueError at construction and via the setter."""
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        GaussianDropout(p)
    layer = GaussianDropout(0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        layer.p = p
    assert layer.p == 0.5


# -- Alpha dropout ---------------------------------------------------------------------------
def test_alpha_prime_is_minus_selu_scale_times_alpha():
    """alpha' = -lambda * alpha, SELU's negative saturation value (Klambauer et al. 2017)."""
    assert_allclose(ALPHA_PRIME, -1.0507009873554805 * 1.6732632423543772, rtol=1e-15)
    assert_allclose(ALPHA_PRIME, -1.7580993408473766, rtol=1e-15)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_alpha_affine_restores_zero_mean_unit_variance_exactly(p):
    """(a, b) solve E[a z + b] = 0, Var[a z + b] = 1 for z = x m + alpha' (1 - m), x ~ N(0, 1)."""
    a, b = alpha_dropout_affine(p)
    q = 1.0 - p
    mean_z, var_z = p * ALPHA_PRIME, q + p * ALPHA_PRIME**2 - (p * ALPHA_PRIME) ** 2
    assert a * mean_z + b == pytest.approx(0.0, abs=1e-12)
    assert a**2 * var_z == pytest.approx(1.0, rel=1e-12)
    assert alpha_dropout_affine(1.0) == (0.0, 0.0)


@P_VALUES
def test_alpha_dropout_keeps_standard_normal_moments(p):
    """On N(0, 1) input the output has mean 0 and variance 1; kept fraction is Bernoulli(q)."""
    n = 10**6
    x = np.random.default_rng(24).standard_normal(n)
    layer = AlphaDropout(p, rng=25)
    y = layer.forward(x)
    assert_within(y.mean(), 0.0, 1.0 / math.sqrt(n), "alpha dropout mean")
    # Variance bound: the sd of the sample variance is sqrt((mu4 - sigma^4) / n); y is not
    # normal, so we plug in the sample 4th central moment m4 and the sample variance s^2.
    s2 = y.var(ddof=1)
    m4 = np.mean((y - y.mean()) ** 4)
    assert_within(s2, 1.0, math.sqrt((m4 - s2**2) / n), "alpha dropout variance")
    a, b = alpha_dropout_affine(p)
    dropped = y == a * ALPHA_PRIME + b
    assert np.array_equal(dropped, ~layer.mask)
    assert_binomial(int(n - dropped.sum()), n, 1.0 - p, "kept elements")


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_alpha_forward_backward_exact_under_given_mask(p):
    """forward = a*(x*m + alpha'*(1-m)) + b and backward = a*m*dout for a fixed mask."""
    gen = np.random.default_rng(26)
    x, dout = gen.standard_normal((5, 6)), gen.standard_normal((5, 6))
    m = gen.random((5, 6)) < 0.5
    a, b = alpha_dropout_affine(p)
    layer = AlphaDropout(p, rng=0)
    y = layer.forward(x, mask=m)
    assert_allclose(y, a * (x * m + ALPHA_PRIME * (1 - m)) + b, rtol=1e-15, atol=0)
    assert_allclose(layer.backward(dout), a * m * dout, rtol=1e-15, atol=0)
    assert np.array_equal(layer.mask, m)


def test_alpha_p_zero_is_identity_and_p_one_gives_zeros():
    """p = 0: a = 1, b = 0, y = x; p = 1: zeros with zero gradient, no NaN."""
    x = np.random.default_rng(27).standard_normal((3, 4))
    layer = AlphaDropout(0.0, rng=0)
    assert_allclose(layer.forward(x), x, rtol=1e-15, atol=0)
    assert_allclose(layer.backward(x), x, rtol=1e-15, atol=0)
    layer = AlphaDropout(1.0, rng=0)
    x[0, 0] = np.inf
    y, dx = layer.forward(x), layer.backward(np.ones_like(x))
    assert np.array_equal(y, np.zeros_like(x))
    assert np.array_equal(dx, np.zeros_like(x))


# -- shared properties -----------------------------------------------------------------------
@BOTH
def test_same_seed_same_noise_different_seed_different_noise(cls):
    """A fixed seed reproduces the draw, another seed changes it, and so does the next call."""
    x = np.ones((20, 30))
    first, again, other = (cls(0.5, rng=s) for s in (3, 3, 4))
    y1, y2, y3 = first.forward(x), again.forward(x), other.forward(x)
    assert np.array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    assert not np.array_equal(y1, first.forward(x))


@BOTH
def test_eval_mode_is_identity(cls):
    """Eval returns x itself and backward passes dout through unchanged."""
    gen = np.random.default_rng(28)
    x, dout = gen.standard_normal((3, 4)), gen.standard_normal((3, 4))
    layer = cls(0.4, rng=0)
    assert layer.forward(x, training=False) is x
    assert np.array_equal(layer.backward(dout), dout)


@BOTH
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_dtype_is_preserved(cls, dtype, training):
    """float32 in -> float32 out (forward and backward); float64 stays float64."""
    layer = cls(0.4, rng=0)
    x = np.random.default_rng(29).standard_normal((3, 4)).astype(dtype)
    assert layer.forward(x, training=training).dtype == dtype
    assert layer.backward(np.ones((3, 4), dtype=dtype)).dtype == dtype


@BOTH
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(cls, shape, training):
    """backward matches central finite differences in float64 (noise held fixed)."""
    x = np.random.default_rng(30).standard_normal(shape)
    assert gradcheck(cls(0.5, rng=1), x, training=training)


def test_feature_alpha_dropout_shares_mask_over_trailing_dims():
    """FeatureAlphaDropout: one keep draw per (n, c); dropped channels are constant a*alpha'+b."""
    layer = FeatureAlphaDropout(0.5, rng=3)
    x = np.random.default_rng(4).standard_normal((6, 5, 3, 4))
    y = layer.forward(x)
    assert layer.mask.shape == (6, 5, 1, 1)
    a, b = alpha_dropout_affine(0.5)
    dropped = ~layer.mask[..., 0, 0]
    assert 0 < dropped.sum() < dropped.size
    assert_allclose(y[dropped], a * ALPHA_PRIME + b, rtol=1e-15)
    assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-14)
    assert gradcheck(FeatureAlphaDropout(0.5, rng=1), x[:2, :3, :2, :2])


def test_feature_alpha_dropout_rejects_1d_input():
    with pytest.raises(ValueError, match=r"\(N, C, \*\)"):
        FeatureAlphaDropout(0.5).forward(np.ones(4))
