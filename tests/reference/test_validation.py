"""Bad-input behaviour of the dropout reference layers: clear errors, never silent garbage."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dropkit.reference import (
    AlphaDropout,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    Embedding,
    EmbeddingDropout,
    GaussianDropout,
    LockedDropout,
)

# name -> (factory(p, **kw), valid input)
LAYERS = {
    "Dropout": (lambda p, **kw: Dropout(p, **kw), np.ones((2, 3))),
    "Dropout1d": (lambda p, **kw: Dropout1d(p, **kw), np.ones((2, 3, 4))),
    "Dropout2d": (lambda p, **kw: Dropout2d(p, **kw), np.ones((2, 3, 4, 4))),
    "Dropout3d": (lambda p, **kw: Dropout3d(p, **kw), np.ones((2, 3, 2, 2, 2))),
    "LockedDropout": (lambda p, **kw: LockedDropout(p, **kw), np.ones((4, 2, 3))),
    "DropPath": (lambda p, **kw: DropPath(p, **kw), np.ones((2, 3))),
    "EmbeddingDropout": (lambda p, **kw: EmbeddingDropout(p, **kw), np.ones((5, 3))),
    "Embedding": (lambda p, **kw: Embedding(5, 3, p, **kw), np.array([[0, 4], [2, 2]])),
    "GaussianDropout": (lambda p, **kw: GaussianDropout(p, **kw), np.ones((2, 3))),
    "AlphaDropout": (lambda p, **kw: AlphaDropout(p, **kw), np.ones((2, 3))),
}
ALL = pytest.mark.parametrize("name", list(LAYERS))
FLOAT_INPUT = [n for n in LAYERS if n != "Embedding"]  # Embedding takes integer ids


def interval(name: str) -> str:
    """The allowed range of p quoted in the error message (Gaussian excludes p = 1)."""
    return re.escape("[0, 1)" if name == "GaussianDropout" else "[0, 1]")


def make(name: str, p: float = 0.5, **kw):
    factory, x = LAYERS[name]
    return factory(p, **kw), x


# -- the drop probability --------------------------------------------------------------------
@ALL
@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf"), -np.inf])
def test_p_out_of_range_is_rejected(name, p):
    """p outside [0, 1] (NaN included) raises ValueError naming p and the interval."""
    with pytest.raises(ValueError, match=rf"\bp\b.*{interval(name)}"):
        make(name, p)


@ALL
@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_p_setter_validates(name, p):
    """Assigning an invalid p after construction raises ValueError and keeps the old p."""
    layer, _ = make(name, 0.25)
    owner = layer.dropout if name == "Embedding" else layer
    with pytest.raises(ValueError, match=rf"\bp\b.*{interval(name)}"):
        owner.p = p
    assert owner.p == 0.25


def test_embedding_p_assignment_is_validated():
    """Embedding takes p; assigning emb.p = 1.5 must not be silently accepted and ignored."""
    emb = Embedding(5, 3, p=0.25)
    with pytest.raises(ValueError, match=re.escape("[0, 1]")):
        emb.p = 1.5


@ALL
@pytest.mark.parametrize("p", ["0.5", None, True, 1j, [0.5]])
def test_p_of_wrong_type_is_rejected(name, p):
    """p that is not a real number (a string, None, a bool, complex) raises TypeError."""
    with pytest.raises(TypeError, match="p must be a real number"):
        make(name, p)


# -- input data ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FLOAT_INPUT)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex128])
@pytest.mark.parametrize("training", [True, False])
def test_non_floating_input_is_rejected(name, dtype, training):
    """Integer (or bool, complex) inputs raise TypeError mentioning floating point."""
    layer, x = make(name)
    with pytest.raises(TypeError, match="floating"):
        layer.forward(x.astype(dtype), training=training)


@ALL
def test_integer_dout_is_rejected(name):
    """An integer dout raises TypeError mentioning floating point."""
    layer, x = make(name)
    y = layer.forward(x)
    with pytest.raises(TypeError, match="floating"):
        layer.backward(np.ones(y.shape, dtype=np.int64))


def test_embedding_rejects_float_ids_integer_weights_and_bad_ids():
    """Embedding: float ids -> TypeError, integer weights -> TypeError, ids out of range."""
    with pytest.raises(TypeError, match="integers"):
        Embedding(5, 3, 0.5).forward(np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="floating"):
        Embedding(5, 3, 0.5, dtype=np.int64).forward(np.array([0, 1]))
    for ids in ([0, 5], [-1, 2]):
        with pytest.raises(ValueError, match=re.escape("[0, 5)")):
            Embedding(5, 3, 0.5).forward(np.array(ids))
    for sizes in ((0, 3), (5, 0), (2.5, 3)):
        with pytest.raises(ValueError, match=">= 1"):
            Embedding(*sizes)


# -- backward --------------------------------------------------------------------------------
@ALL
def test_backward_before_forward_raises(name):
    """backward() on a fresh layer raises RuntimeError saying forward must run first."""
    layer, x = make(name)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(x.shape))


@ALL
@pytest.mark.parametrize("training", [True, False])
def test_dout_of_wrong_shape_raises(name, training):
    """A dout whose shape differs from the output raises ValueError naming both shapes."""
    layer, x = make(name)
    out_shape = layer.forward(x, training=training).shape
    bad = (*out_shape, 1)
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        layer.backward(np.ones(bad))
    assert str(out_shape) in str(info.value)


# -- input rank, broadcast dims and masks ----------------------------------------------------
@pytest.mark.parametrize(
    ("layer", "shape", "layout"),
    [
        (Dropout1d(0.5), (2, 3), "(N, C, L)"),
        (Dropout1d(0.5), (2, 3, 4, 4), "(N, C, L)"),
        (Dropout2d(0.5), (2, 3, 4), "(N, C, H, W)"),
        (Dropout2d(0.5), (2, 3, 4, 4, 4), "(N, C, H, W)"),
        (Dropout3d(0.5), (2, 3, 4, 4), "(N, C, D, H, W)"),
        (LockedDropout(0.5), (4, 3), "(T, N, H)"),
        (LockedDropout(0.5, batch_first=True), (2, 4, 3, 1), "(N, T, H)"),
        (EmbeddingDropout(0.5), (5, 3, 1), "(num_embeddings, embedding_dim)"),
        (EmbeddingDropout(0.5), (5,), "(num_embeddings, embedding_dim)"),
        (DropPath(0.5), (), "(N, *)"),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_wrong_input_rank_names_expected_layout(layer, shape, layout, training):
    """An input of the wrong rank raises ValueError naming the expected layout (train and eval)."""
    with pytest.raises(ValueError, match=re.escape(layout)):
        layer.forward(np.ones(shape), training=training)


@pytest.mark.parametrize("dims", [(3,), (-4,), (0, 7)])
@pytest.mark.parametrize("training", [True, False])
def test_broadcast_dims_out_of_range_raise(dims, training):
    """A broadcast dim outside -ndim..ndim-1 raises ValueError on forward."""
    with pytest.raises(ValueError, match="out of range"):
        Dropout(0.5, broadcast_dims=dims).forward(np.ones((2, 3, 4)), training=training)


@pytest.mark.parametrize("dims", [(1.0,), ("a",), (True,)])
def test_broadcast_dims_of_wrong_type_raise(dims):
    """Non-integer broadcast dims raise TypeError at construction."""
    with pytest.raises(TypeError, match="broadcast_dims must be ints"):
        Dropout(0.5, broadcast_dims=dims)


@pytest.mark.parametrize("name", FLOAT_INPUT)
def test_given_mask_of_wrong_shape_raises(name):
    """An explicit mask whose shape is not the expected mask shape raises ValueError."""
    layer, x = make(name)
    with pytest.raises(ValueError, match="mask has shape"):
        layer.forward(x, mask=np.ones((*x.shape, 2)))


@pytest.mark.parametrize("name", [n for n in FLOAT_INPUT if n != "GaussianDropout"])
def test_given_mask_with_values_other_than_0_1_raises(name):
    """A Bernoulli keep mask holding a value other than 0/1 raises ValueError."""
    layer, x = make(name)
    mask = np.ones(layer.mask_shape(x.shape))
    mask.flat[0] = 2.0
    with pytest.raises(ValueError, match="0/1"):
        layer.forward(x, mask=mask)


def test_droppath_rejects_unknown_mode():
    """DropPath(mode=...) must be 'row' or 'batch'."""
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch'"):
        DropPath(0.5, mode="x")


# -- rng -------------------------------------------------------------------------------------
@ALL
@pytest.mark.parametrize("rng", ["0", 1.5, True, np.random.RandomState(0)], ids=str)
def test_rng_of_wrong_type_raises(name, rng):
    """rng must be a numpy Generator, an int seed or None; anything else is a TypeError."""
    with pytest.raises(TypeError, match="rng must be"):
        make(name, rng=rng)
