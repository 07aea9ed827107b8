"""Bernoulli dropout reference layers: Dropout, its presets and embedding dropout.

Statistical checks use 6-sigma intervals (tests/stats.py) with fixed seeds; mask geometry is
read from the output of ``forward(ones)``, which is ``mask / q``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from dropkit.reference import (
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    Embedding,
    EmbeddingDropout,
    LockedDropout,
    gradcheck,
)
from tests.stats import assert_binomial, assert_within

# name -> (factory(p, rng), small input shape)
LAYERS = {
    "dropout": (lambda p, rng: Dropout(p, rng=rng), (3, 4)),
    "dropout-standard": (lambda p, rng: Dropout(p, inverted=False, rng=rng), (3, 4)),
    "dropout-bcast": (lambda p, rng: Dropout(p, broadcast_dims=(-1, 0), rng=rng), (2, 3, 4)),
    "dropout1d": (lambda p, rng: Dropout1d(p, rng=rng), (2, 3, 4)),
    "dropout2d": (lambda p, rng: Dropout2d(p, rng=rng), (2, 3, 4, 4)),
    "dropout3d": (lambda p, rng: Dropout3d(p, rng=rng), (2, 3, 2, 3, 3)),
    "locked": (lambda p, rng: LockedDropout(p, rng=rng), (4, 3, 5)),
    "locked-batch-first": (lambda p, rng: LockedDropout(p, batch_first=True, rng=rng), (3, 4, 5)),
    "droppath-row": (lambda p, rng: DropPath(p, rng=rng), (6, 3, 4)),
    "droppath-batch": (lambda p, rng: DropPath(p, mode="batch", rng=rng), (6, 3, 4)),
    "droppath-noscale": (lambda p, rng: DropPath(p, scale_by_keep=False, rng=rng), (6, 3, 4)),
    "embedding-dropout": (lambda p, rng: EmbeddingDropout(p, rng=rng), (7, 4)),
}
ALL = pytest.mark.parametrize("name", list(LAYERS))
INVERTED = [n for n in LAYERS if n not in ("dropout-standard", "droppath-noscale")]
# Layers whose evaluation is the identity: DropPath is, whatever scale_by_keep (timm's rule).
EVAL_IDENTITY = [n for n in LAYERS if n != "dropout-standard"]


def make(name: str, p: float, rng=0):
    factory, shape = LAYERS[name]
    return factory(p, rng), shape


# -- 1. statistics ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(p):
    """Each of 10^6 elements is kept independently with probability 1 - p."""
    n = 10**6
    y = Dropout(p, rng=11).forward(np.ones(n))
    assert_binomial(int(np.count_nonzero(y)), n, 1.0 - p, "kept elements")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("inverted", [True, False])
def test_train_mean_matches_eval(p, inverted):
    """E[y] = x (inverted) or q*x (standard) for constant x; sd of the mean from Bernoulli."""
    c, n, q = 3.0, 10**6, 1.0 - p
    y = Dropout(p, inverted=inverted, rng=12).forward(np.full(n, c))
    if inverted:
        assert_within(y.mean(), c, c * math.sqrt(p / q) / math.sqrt(n), "inverted mean")
    else:
        assert_within(y.mean(), q * c, c * math.sqrt(p * q) / math.sqrt(n), "standard mean")


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (Dropout1d(0.3, rng=13), (500, 200, 3)),
        (Dropout2d(0.3, rng=13), (500, 200, 2, 2)),
        (Dropout3d(0.3, rng=13), (500, 200, 2, 1, 2)),
        (LockedDropout(0.3, rng=13), (3, 500, 200)),
        (EmbeddingDropout(0.3, rng=13), (10**5, 3)),
    ],
)
def test_shared_mask_kept_fraction_is_binomial(layer, shape):
    """One Bernoulli(q) draw per mask group ((N, C) pairs for channel dropout), read from y."""
    y = layer.forward(np.ones(shape))
    first = y[tuple(slice(0, 1) if m == 1 else slice(None) for m in layer.mask_shape(shape))]
    assert_binomial(int(np.count_nonzero(first)), first.size, 0.7, "kept groups")


def test_droppath_batch_mode_keeps_whole_batch_with_probability_q():
    """mode='batch': each call keeps all of the batch or none of it; calls are Bernoulli(q)."""
    layer, calls, kept = DropPath(0.3, mode="batch", rng=14), 4000, 0
    for _ in range(calls):
        y = layer.forward(np.ones((4, 3)))
        assert np.all(y == 0) or np.all(y == 1 / 0.7)
        kept += bool(y[0, 0])
    assert layer.mask.shape == (1, 1)
    assert_binomial(kept, calls, 0.7, "kept batches")


# -- 2. mask geometry ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layer", "shape", "shared"),
    [
        (Dropout1d(0.5, rng=1), (8, 32, 5), (2,)),
        (Dropout2d(0.5, rng=1), (8, 32, 4, 5), (2, 3)),
        (Dropout3d(0.5, rng=1), (8, 32, 3, 4, 5), (2, 3, 4)),
        (LockedDropout(0.5, rng=1), (6, 8, 32), (0,)),
        (LockedDropout(0.5, batch_first=True, rng=1), (8, 6, 32), (1,)),
        (DropPath(0.5, rng=1), (64, 3, 4), (1, 2)),
        (EmbeddingDropout(0.5, rng=1), (64, 7), (1,)),
        (Dropout(0.5, broadcast_dims=(-1,), rng=1), (8, 32, 5), (2,)),
        (Dropout(0.5, broadcast_dims=(0, -1), rng=1), (4, 32, 5), (0, 2)),
        (Dropout(0.5, broadcast_dims=(1, -2), rng=1), (8, 4, 32), (1,)),
    ],
)
def test_mask_is_constant_along_shared_dims_only(layer, shape, shared):
    """y = mask/q is constant over the shared dims and varies along every other dim."""
    y = layer.forward(np.ones(shape))
    assert set(np.unique(y)) <= {0.0, 2.0}
    first = y[tuple(slice(0, 1) if ax in shared else slice(None) for ax in range(len(shape)))]
    assert np.array_equal(np.broadcast_to(first, shape), y)
    for ax in set(range(len(shape))) - set(shared):
        assert np.any(first != first.take([0], axis=ax)), f"mask does not vary along dim {ax}"
    assert layer.mask.shape == layer.mask_shape(shape) == first.shape
    assert np.array_equal(layer.mask, first != 0)


def test_embedding_dropout_of_ids_gives_one_vector_per_id():
    """Every occurrence of a dropped id is the same zero vector; kept ids give W[id]/q."""
    emb = Embedding(20, 6, p=0.5, rng=3)
    weight = emb.params["weight"].copy()
    ids = np.tile(np.arange(20), (3, 2))
    out = emb.forward(ids)
    dropped = 0
    for v in range(20):
        rows = out[ids == v]
        assert rows.shape == (6, 6)
        assert np.array_equal(rows, np.broadcast_to(rows[0], rows.shape))
        if not rows[0].any():
            dropped += 1
        else:
            assert_allclose(rows[0], weight[v] / 0.5, rtol=1e-15)
        assert emb.dropout.mask[v, 0] == bool(rows[0].any())
    assert 0 < dropped < 20


# -- 3. exact values under a fixed mask; seeds ----------------------------------------------
@ALL
def test_forward_backward_exact_under_given_mask(name):
    """forward(x, mask=m) = where(m, x/q, 0) (or m*x), backward likewise, to rtol 1e-15."""
    layer, shape = make(name, 0.4)
    gen = np.random.default_rng(7)
    x, dout = gen.standard_normal(shape), gen.standard_normal(shape)
    m = gen.random(layer.mask_shape(shape)) < 0.6
    y = layer.forward(x, mask=m)
    dx = layer.backward(dout)
    if layer.inverted:
        y_exp, dx_exp = np.where(m, x / 0.6, 0.0), np.where(m, dout / 0.6, 0.0)
    else:
        y_exp, dx_exp = m * x, m * dout
    assert_allclose(y, y_exp, rtol=1e-15, atol=0)
    assert_allclose(dx, dx_exp, rtol=1e-15, atol=0)
    assert np.array_equal(layer.mask, m)


@ALL
def test_same_seed_same_mask_different_seed_different_mask(name):
    """A fixed int seed reproduces the mask; another seed (or the next call) draws a new one."""
    _, small = LAYERS[name]
    shape = (small[0] * 10, small[1] * 10, *small[2:])
    masks = []
    for seed in (5, 5, 6):
        layer, _ = make(name, 0.5, seed)
        layer.forward(np.ones(shape))
        masks.append(layer.mask)
    assert np.array_equal(masks[0], masks[1])
    if name == "droppath-batch":  # a single draw: compare across many seeds instead
        draws = {bool(make(name, 0.5, s)[0].forward(np.ones(2))[0]) for s in range(64)}
        assert draws == {True, False}
    else:
        assert not np.array_equal(masks[0], masks[2])


# -- 4. evaluation mode ----------------------------------------------------------------------
@ALL
def test_eval_mode_is_identity_or_scaled_by_q(name):
    """Eval: inverted (and any DropPath) returns x itself, backward identity; standard dropout
    gives q*x and q*dout."""
    layer, shape = make(name, 0.3)
    gen = np.random.default_rng(8)
    x, dout = gen.standard_normal(shape), gen.standard_normal(shape)
    y = layer.forward(x, training=False)
    dx = layer.backward(dout)
    if name in EVAL_IDENTITY:
        assert y is x
        assert np.array_equal(dx, dout)
    else:
        assert_allclose(y, 0.7 * x, rtol=1e-15, atol=0)
        assert_allclose(dx, 0.7 * dout, rtol=1e-15, atol=0)


# -- 5. dtype --------------------------------------------------------------------------------
@ALL
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_dtype_is_preserved(name, dtype, training):
    """float32 in -> float32 out (forward and backward); float64 stays float64."""
    layer, shape = make(name, 0.3)
    y = layer.forward(np.ones(shape, dtype=dtype), training=training)
    assert y.dtype == dtype
    assert layer.backward(np.ones(shape, dtype=dtype)).dtype == dtype


def test_embedding_float32_weight_stays_float32():
    """Embedding(dtype=float32): output and weight gradient are float32."""
    emb = Embedding(5, 3, p=0.4, rng=0, dtype=np.float32)
    out = emb.forward(np.array([[0, 1], [4, 1]]))
    emb.backward(np.ones(out.shape, dtype=np.float32))
    assert out.dtype == np.float32
    assert emb.grads["weight"].dtype == np.float32


# -- 6. edge cases ---------------------------------------------------------------------------
@ALL
def test_p_zero_keeps_everything(name):
    """p = 0 in training: output equals input and gradient equals dout."""
    layer, shape = make(name, 0.0)
    x = np.random.default_rng(9).standard_normal(shape)
    assert np.array_equal(layer.forward(x), x)
    assert np.array_equal(layer.backward(x), x)


@ALL
def test_p_one_gives_zeros_without_nan_even_for_inf(name):
    """p = 1 in training: zeros and zero gradient, and a dropped inf gives 0, never NaN."""
    layer, shape = make(name, 1.0)
    x = np.full(shape, np.inf)
    x.flat[0] = -np.inf
    y = layer.forward(x)
    dx = layer.backward(np.full(shape, np.inf))
    assert not np.isnan(y).any()
    assert not np.isnan(dx).any()
    assert np.array_equal(y, np.zeros(shape))
    assert np.array_equal(dx, np.zeros(shape))


def test_standard_dropout_eval_at_p_one_gives_zeros_not_nan_for_inf():
    """Eval of standard dropout at p = 1 must equal E[y_train] = 0, not 0 * inf = NaN."""
    layer, shape = make("dropout-standard", 1.0)
    y = layer.forward(np.full(shape, np.inf), training=False)
    assert np.array_equal(y, np.zeros(shape)), f"eval output at p=1: {y.ravel()[:3]}"


def test_droppath_without_scaling_evaluates_to_identity_like_timm():
    """DropPath(scale_by_keep=False): train y = b*x (mean q*x), eval y = x itself."""
    layer, shape = make("droppath-noscale", 0.25)
    x = np.ones(shape)
    assert layer.forward(x, training=False) is x
    y = layer.forward(x)
    assert set(np.unique(y)) <= {0.0, 1.0}


# -- 7. gradcheck ----------------------------------------------------------------------------
@ALL
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck(name, training):
    """backward matches central finite differences (float64, masks held fixed)."""
    layer, shape = make(name, 0.5)
    x = np.random.default_rng(10).standard_normal(shape)
    assert gradcheck(layer, x, training=training)


def test_gradcheck_embedding_weight_through_embedding_dropout():
    """Embedding's weight gradient (scatter + embedding dropout backward) is correct."""
    emb = Embedding(6, 4, p=0.5, rng=0)
    ids = np.array([[0, 2, 2], [5, 0, 1]])
    assert gradcheck(emb, ids)
    assert 0 < emb.dropout.mask.sum() < 6  # the checked mask had kept and dropped rows
