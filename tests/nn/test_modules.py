"""dropkit.nn module behaviour: repr, train/eval, validation, inplace, edge rates, dtypes, copying
and serialisation, activation checkpointing."""

from __future__ import annotations

import copy
import io
import pickle
import re

import numpy as np
import pytest
import torch
from torch.utils.checkpoint import checkpoint

import dropkit.functional as DF
import dropkit.nn as dkn

# name -> (factory(p, inplace), input shape); the shapes are valid for the module's layout.
MODULES = {
    "dropout": (lambda p, i=False: dkn.Dropout(p, i), (6, 8)),
    "dropout-standard": (lambda p, i=False: dkn.Dropout(p, i, inverted=False), (6, 8)),
    "dropout-bcast": (lambda p, i=False: dkn.Dropout(p, i, broadcast_dims=(-1,)), (6, 8, 3)),
    "dropout1d": (lambda p, i=False: dkn.Dropout1d(p, i), (4, 5, 6)),
    "dropout2d": (lambda p, i=False: dkn.Dropout2d(p, i), (4, 5, 3, 3)),
    "dropout3d": (lambda p, i=False: dkn.Dropout3d(p, i), (3, 4, 2, 3, 2)),
    "locked": (lambda p, i=False: dkn.LockedDropout(p, inplace=i), (6, 4, 5)),
    "locked-batch-first": (lambda p, i=False: dkn.LockedDropout(p, True, i), (4, 6, 5)),
    "droppath-row": (lambda p, i=False: dkn.DropPath(p, inplace=i), (8, 3, 4)),
    "droppath-batch": (lambda p, i=False: dkn.DropPath(p, "batch", inplace=i), (8, 3, 4)),
    "droppath-noscale": (lambda p, i=False: dkn.DropPath(p, "row", False, i), (8, 3)),
    "alpha": (lambda p, i=False: dkn.AlphaDropout(p, i), (6, 8)),
    "feature-alpha": (lambda p, i=False: dkn.FeatureAlphaDropout(p, i), (4, 5, 3)),
    "gaussian": (lambda p, i=False: dkn.GaussianDropout(p, i), (6, 8)),
}
ALL = pytest.mark.parametrize("name", list(MODULES))
ALLOWS_ONE = [n for n in MODULES if n != "gaussian"]
CLASSES = [dkn.Dropout, dkn.Dropout1d, dkn.Dropout2d, dkn.Dropout3d, dkn.LockedDropout]
CLASSES += [dkn.DropPath, dkn.AlphaDropout, dkn.FeatureAlphaDropout, dkn.GaussianDropout]


def make(name, p=0.5, inplace=False):
    factory, shape = MODULES[name]
    return factory(p, inplace), shape


def randn(shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize(
    ("module", "text"),
    [
        (dkn.Dropout(), "Dropout(p=0.5, inplace=False)"),
        (dkn.Dropout(0.2, True, False), "Dropout(p=0.2, inplace=True, inverted=False)"),
        (
            dkn.Dropout(0.1, broadcast_dims=[0, -1]),
            "Dropout(p=0.1, inplace=False, broadcast_dims=(0, -1))",
        ),
        (dkn.Dropout2d(0.3), "Dropout2d(p=0.3, inplace=False)"),
        (dkn.Dropout3d(1), "Dropout3d(p=1, inplace=False)"),
        (dkn.LockedDropout(0.4, True), "LockedDropout(p=0.4, inplace=False, batch_first=True)"),
        (
            dkn.DropPath(0.1, "batch", False),
            "DropPath(p=0.1, inplace=False, mode='batch', scale_by_keep=False)",
        ),
        (dkn.AlphaDropout(0.2), "AlphaDropout(p=0.2, inplace=False)"),
        (dkn.FeatureAlphaDropout(0.2, True), "FeatureAlphaDropout(p=0.2, inplace=True)"),
        (dkn.GaussianDropout(0), "GaussianDropout(p=0, inplace=False)"),
    ],
)
def test_repr(module, text):
    """repr shows p and the non-default hyper-parameters."""
    assert repr(module) == text


@ALL
def test_repr_shows_inplace_when_set(name):
    """Every module constructed with inplace=True says so in its repr (as torch.nn.Dropout does)."""
    module, _ = make(name, 0.5, inplace=True)
    assert "inplace=True" in repr(module), f"{module!r} hides inplace=True"


@ALL
def test_train_eval_switching(name):
    """train() makes the module stochastic, eval() gives the evaluation rule, and back again."""
    module, shape = make(name, 0.5)
    x = randn(shape)
    expected_eval = 0.5 * x if name == "dropout-standard" else x
    torch.manual_seed(0)
    modes, outputs = [], []
    for switch in (lambda m: m, lambda m: m.eval(), lambda m: m.train()):
        assert switch(module) is module
        modes.append(module.training)
        outputs.append(torch.equal(module(x), expected_eval))
    assert modes == [True, False, True]
    assert outputs == [False, True, False]


# Out-of-range rates (NaN and inf too; Gaussian also p = 1) are ValueErrors, non-reals TypeErrors.
BAD_RATES = [(c, p, ValueError) for c in CLASSES for p in (-0.1, 1.5, float("nan"), float("inf"))]
BAD_RATES += [(dkn.GaussianDropout, 1.0, ValueError), (dkn.GaussianDropout, 1, ValueError)]
BAD_RATES += [(c, p, TypeError) for c in CLASSES for p in ("0.5", True, None)]


@pytest.mark.parametrize(("cls", "p", "error"), BAD_RATES)
def test_p_validated_on_construction_and_assignment(cls, p, error):
    """A bad rate raises, naming [0, 1] ([0, 1) for Gaussian), in __init__ and on assignment."""
    gaussian = cls is dkn.GaussianDropout and error is ValueError
    interval = r"\[0, 1\)" if gaussian else r"\[0, 1\]"
    with pytest.raises(error, match=interval):
        cls(p)
    module = cls(0.25)
    with pytest.raises(error, match=interval):
        module.p = p
    assert module.p == 0.25
    module.p = np.float32(0.5)  # valid rates, NumPy reals included, are stored as floats
    assert (module.p, type(module.p)) == (0.5, float)


@ALL
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_input_is_type_error(name, training, dtype):
    """Integer, bool and complex inputs are refused with a TypeError, in training and eval."""
    module, shape = make(name)
    module.train(training)
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.zeros(shape, dtype=dtype))


@ALL
def test_inplace_on_leaf_requiring_grad_is_error(name):
    """inplace=True on a leaf that requires grad is a ValueError that mentions inplace."""
    module, shape = make(name, 0.5, inplace=True)
    x = randn(shape).requires_grad_(True)
    with pytest.raises(ValueError, match="inplace"):
        module(x)


@ALL
def test_inplace_on_non_leaf_matches_out_of_place(name):
    """inplace=True returns the input object, overwritten with the out-of-place values and grads."""
    (inplace, shape), (plain, _) = make(name, 0.5, True), make(name, 0.5, False)
    leaf, dout = randn(shape, 1).requires_grad_(True), randn(shape, 2)
    torch.manual_seed(3)
    y_ref = plain(leaf * 1.0)
    (g_ref,) = torch.autograd.grad(y_ref, leaf, dout)
    x = leaf * 1.0
    torch.manual_seed(3)
    y = inplace(x)
    assert y is x
    assert torch.equal(x, y_ref)
    assert not torch.equal(x, leaf)
    (g,) = torch.autograd.grad(y, leaf, dout)
    assert torch.equal(g, g_ref)


@ALL
def test_inplace_in_eval(name):
    """inplace=True in eval returns x itself: unchanged (standard dropout: scaled by q in place)."""
    module, shape = make(name, 0.5, inplace=True)
    module.eval()
    x, before = randn(shape), randn(shape)
    y = module(x)
    assert y is x
    assert torch.equal(x, 0.5 * before if name == "dropout-standard" else before)


@pytest.mark.parametrize(
    ("module", "shape", "layout"),
    [
        (dkn.Dropout1d(), (5,), "(N, C, L)"),
        (dkn.Dropout1d(), (2, 3, 4, 5), "(N, C, L)"),
        (dkn.Dropout2d(), (4, 5, 6), "(N, C, H, W)"),
        (dkn.Dropout2d(), (2, 3, 4, 5, 6), "(N, C, H, W)"),
        (dkn.Dropout3d(), (3, 4, 5), "(N, C, D, H, W)"),
        (dkn.LockedDropout(), (4, 5), "(T, N, H)"),
        (dkn.LockedDropout(), (2, 3, 4, 5), "(T, N, H)"),
        (dkn.LockedDropout(batch_first=True), (4, 5), "(N, T, H)"),
        (dkn.FeatureAlphaDropout(), (5,), "(N, C, *)"),
        (dkn.DropPath(), (), "(N, *)"),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_wrong_rank_names_the_layout(module, shape, layout, training):
    """A wrong rank is a ValueError naming the layout in training and eval (no reinterpreting)."""
    module.train(training)
    with pytest.raises(ValueError, match=re.escape(layout)):
        module(torch.ones(shape))


@pytest.mark.parametrize(("name", "shape"), [("dropout1d", (6, 5)), ("dropout3d", (6, 2, 3, 4))])
def test_unbatched_input_is_one_sample_as_in_torch(name, shape):
    """torch documents (C, L) / (C, D, H, W) as one unbatched sample: the mask is that of the
    batched call on x[None] (one value per channel), in and out of place, gradient included."""
    op = getattr(DF, name)
    x = torch.randn(shape, requires_grad=True)
    y = op(x, 0.5, seed=4)
    assert y.shape == x.shape
    assert torch.equal(y, op(x[None], 0.5, seed=4)[0])
    assert torch.equal(y, torch.where(y != 0, x * 2, 0))  # kept values rescaled by 1/q
    assert bool((y.flatten(1) != 0).all(1).logical_or((y.flatten(1) == 0).all(1)).all())
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(g, (y != 0).to(g.dtype) * 2)
    z = x.detach().clone()
    assert op(z, 0.5, inplace=True, seed=4) is z
    assert torch.equal(z, y)
    module = getattr(dkn, name.replace("dropout", "Dropout"))(0.5)
    torch.manual_seed(0)
    a = module(x)
    torch.manual_seed(0)
    assert torch.equal(a, module(x[None])[0])


@ALL
def test_p_zero_is_identity_in_training(name):
    """p = 0 in training returns exactly x, and the gradient is exactly dout."""
    module, shape = make(name, 0.0)
    x, dout = randn(shape, 1).requires_grad_(True), randn(shape, 2)
    y = module(x)
    (g,) = torch.autograd.grad(y, x, dout)
    assert torch.equal(y, x)
    assert torch.equal(g, dout)


@pytest.mark.parametrize("name", ALLOWS_ONE)
@pytest.mark.parametrize("inplace", [False, True])
def test_p_one_gives_zeros_and_zero_grad_even_for_inf(name, inplace):
    """p = 1 gives exact zeros and a zero gradient, no NaN, even where the input is +-inf."""
    module, shape = make(name, 1.0, inplace)
    leaf = randn(shape, 1)
    leaf.view(-1)[::3] = float("inf")
    leaf.view(-1)[1::3] = -float("inf")
    leaf.requires_grad_(True)
    y = module(leaf * 1.0 if inplace else leaf)
    (g,) = torch.autograd.grad(y, leaf, torch.ones(shape))
    assert torch.equal(y, torch.zeros(shape))
    assert torch.equal(g, torch.zeros(shape))


@pytest.mark.parametrize("inplace", [False, True])
def test_standard_dropout_p_one_eval_is_zero_for_inf(inplace):
    """Standard dropout evaluates to q*x = 0 at p = 1, exactly 0 (not NaN) for inf inputs."""
    x = torch.tensor([float("inf"), -float("inf"), 1.0])
    y = dkn.Dropout(1.0, inplace, inverted=False).eval()(x)
    assert torch.equal(y, torch.zeros(3))


@ALL
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_preserved(name, training, dtype):
    """Output dtype (and shape) equals the input's for every float dtype, training and eval."""
    module, shape = make(name, 0.3)
    module.train(training)
    y = module(randn(shape, dtype=dtype))
    assert (y.dtype, y.shape) == (dtype, shape)


def config(module):
    """The module's class, hyper-parameters (via repr), rate and mode."""
    return type(module), repr(module), module.p, module.inplace, module.training


@ALL
def test_state_dict_round_trip(name):
    """Modules hold no tensors: the state_dict is empty and loads into a fresh module."""
    module, _ = make(name, 0.3)
    state = module.state_dict()
    assert list(state) == []
    fresh, _ = make(name, 0.3)
    result = fresh.load_state_dict(state)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert config(fresh) == config(module)


def _torch_round_trip(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@ALL
@pytest.mark.parametrize(
    "clone",
    [copy.deepcopy, copy.copy, lambda m: pickle.loads(pickle.dumps(m)), _torch_round_trip],
    ids=["deepcopy", "copy", "pickle", "torch.save"],
)
def test_copies_preserve_arguments(name, clone):
    """deepcopy, copy, pickle and torch.save/load keep p, inplace, the other args and the mode."""
    module, _ = make(name, 0.3, inplace=True)
    module.eval()
    copied = clone(module)
    assert copied is not module
    assert config(copied) == config(module)
    assert vars(copied).keys() == vars(module).keys()
    copied.p = 0.1  # still validated, and independent of the original
    assert module.p == 0.3
    with pytest.raises(ValueError, match=r"\[0, 1"):
        copied.p = 2.0


@ALL
def test_checkpoint_replays_the_mask(name):
    """checkpoint(use_reentrant=False) gives the same output and input gradient (RNG restored)."""
    module, shape = make(name, 0.5)
    x, dout = randn(shape, 1).requires_grad_(True), randn(shape, 2)

    def block(t):
        return torch.sin(module(t))  # sin saves the dropout output, so backward recomputes it

    torch.manual_seed(11)
    y = block(x)
    (g,) = torch.autograd.grad(y, x, dout)
    torch.manual_seed(11)
    y_ckpt = checkpoint(block, x, use_reentrant=False)
    (g_ckpt,) = torch.autograd.grad(y_ckpt, x, dout)
    assert torch.equal(y_ckpt, y)
    assert torch.equal(g_ckpt, g)
