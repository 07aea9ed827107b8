"""dropkit.functional and dropkit.nn against the NumPy reference layers, under identical masks.

Every Bernoulli op draws its keep mask with one ``bernoulli_mask(mask_shape, p, generator=g)``
call and the Gaussian op its noise with one ``gaussian_noise(shape, p, generator=g)`` call, so a
second generator seeded alike reproduces the draw; the reference replays it via ``mask=``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

import dropkit.nn as dkn
from dropkit import functional as F
from dropkit import reference as R
from tests.stats import assert_binomial

# name -> (reference factory, functional op(x, p, training, generator), module factory, shape)
CASES = {
    "dropout": (
        lambda p: R.Dropout(p),
        lambda x, p, t, g: F.dropout(x, p, t, generator=g),
        lambda p: dkn.Dropout(p),
        (5, 6),
    ),
    "dropout-standard": (
        lambda p: R.Dropout(p, inverted=False),
        lambda x, p, t, g: F.dropout(x, p, t, inverted=False, generator=g),
        lambda p: dkn.Dropout(p, inverted=False),
        (5, 6),
    ),
    "dropout-bcast-negative": (
        lambda p: R.Dropout(p, broadcast_dims=(-1, 0)),
        lambda x, p, t, g: F.dropout(x, p, t, broadcast_dims=(-1, 0), generator=g),
        lambda p: dkn.Dropout(p, broadcast_dims=(-1, 0)),
        (3, 4, 5),
    ),
    "dropout-bcast-middle": (
        lambda p: R.Dropout(p, inverted=False, broadcast_dims=(1, -2)),
        lambda x, p, t, g: F.dropout(x, p, t, inverted=False, broadcast_dims=(1, -2), generator=g),
        lambda p: dkn.Dropout(p, inverted=False, broadcast_dims=(1, -2)),
        (3, 4, 5, 2),
    ),
    "dropout1d": (
        lambda p: R.Dropout1d(p),
        lambda x, p, t, g: F.dropout1d(x, p, t, generator=g),
        lambda p: dkn.Dropout1d(p),
        (4, 5, 6),
    ),
    "dropout2d": (
        lambda p: R.Dropout2d(p),
        lambda x, p, t, g: F.dropout2d(x, p, t, generator=g),
        lambda p: dkn.Dropout2d(p),
        (4, 5, 3, 3),
    ),
    "dropout3d": (
        lambda p: R.Dropout3d(p),
        lambda x, p, t, g: F.dropout3d(x, p, t, generator=g),
        lambda p: dkn.Dropout3d(p),
        (3, 4, 2, 3, 2),
    ),
    "locked": (
        lambda p: R.LockedDropout(p),
        lambda x, p, t, g: F.locked_dropout(x, p, t, generator=g),
        lambda p: dkn.LockedDropout(p),
        (6, 4, 5),
    ),
    "locked-batch-first": (
        lambda p: R.LockedDropout(p, batch_first=True),
        lambda x, p, t, g: F.locked_dropout(x, p, t, batch_first=True, generator=g),
        lambda p: dkn.LockedDropout(p, batch_first=True),
        (4, 6, 5),
    ),
    "droppath-row": (
        lambda p: R.DropPath(p),
        lambda x, p, t, g: F.drop_path(x, p, t, generator=g),
        lambda p: dkn.DropPath(p),
        (8, 3, 4),
    ),
    "droppath-batch": (
        lambda p: R.DropPath(p, mode="batch"),
        lambda x, p, t, g: F.drop_path(x, p, t, mode="batch", generator=g),
        lambda p: dkn.DropPath(p, mode="batch"),
        (8, 3, 4),
    ),
    "droppath-noscale": (
        lambda p: R.DropPath(p, scale_by_keep=False),
        lambda x, p, t, g: F.drop_path(x, p, t, scale_by_keep=False, generator=g),
        lambda p: dkn.DropPath(p, scale_by_keep=False),
        (8, 3, 4),
    ),
    "alpha": (
        lambda p: R.AlphaDropout(p),
        lambda x, p, t, g: F.alpha_dropout(x, p, t, generator=g),
        lambda p: dkn.AlphaDropout(p),
        (5, 6),
    ),
    "feature-alpha": (
        lambda p: R.FeatureAlphaDropout(p),
        lambda x, p, t, g: F.feature_alpha_dropout(x, p, t, generator=g),
        lambda p: dkn.FeatureAlphaDropout(p),
        (4, 5, 3, 2),
    ),
    "gaussian": (
        lambda p: R.GaussianDropout(p),
        lambda x, p, t, g: F.gaussian_dropout(x, p, t, generator=g),
        lambda p: dkn.GaussianDropout(p),
        (5, 6),
    ),
}
# Gaussian dropout rejects p = 1 (infinite noise variance); 0.9 is its large-p case instead.
NAME_P = [(n, p) for n in CASES for p in (0.0, 0.3, 0.8, 0.9 if n == "gaussian" else 1.0)]
SEEDS = [0, 7]
RTOL = 1e-12


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(shape, seed):
    """A float64 input (leaf requiring grad) and an upstream gradient, both random."""
    g = gen(1000 + seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g).requires_grad_(True)
    return x, torch.randn(shape, dtype=torch.float64, generator=g)


def replayed_mask(name: str, ref, shape, p: float, seed: int) -> np.ndarray:
    """The draw the functional op makes with ``gen(seed)``, in the reference's mask format."""
    if name == "gaussian":
        noise = F.gaussian_noise(shape, p, dtype=torch.float64, generator=gen(seed))
        return noise.numpy()
    return F.bernoulli_mask(ref.mask_shape(shape), p, generator=gen(seed)).numpy()


def run_torch(op, x, dout, p, training, generator):
    """Output and input gradient of ``op`` for upstream gradient ``dout``."""
    x.grad = None
    y = op(x, p, training, generator)
    y.backward(dout)
    return y.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("name", "p"), NAME_P)
def test_functional_train_matches_reference(name, p, seed):
    """Training forward and input gradient equal the reference's under the identical mask."""
    make_ref, op, _, shape = CASES[name]
    x, dout = inputs(shape, seed)
    ref = make_ref(p)
    mask = replayed_mask(name, ref, shape, p, seed)
    y, dx = run_torch(op, x, dout, p, True, gen(seed))
    y_ref = ref.forward(x.detach().numpy(), True, mask=mask)
    dx_ref = ref.backward(dout.numpy())
    assert_allclose(y, y_ref, rtol=RTOL, atol=0)
    assert_allclose(dx, dx_ref, rtol=RTOL, atol=0)


@pytest.mark.parametrize(("name", "p"), NAME_P)
def test_functional_eval_matches_reference(name, p):
    """Evaluation forward and input gradient equal the reference's evaluation rule."""
    make_ref, op, _, shape = CASES[name]
    x, dout = inputs(shape, 3)
    ref = make_ref(p)
    y, dx = run_torch(op, x, dout, p, False, None)
    assert_allclose(y, ref.forward(x.detach().numpy(), False), rtol=RTOL, atol=0)
    assert_allclose(dx, ref.backward(dout.numpy()), rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", [n for n in CASES if n != "gaussian"])
def test_replayed_masks_are_bernoulli(name):
    """The replayed keep masks (64 seeds, p = 0.4) keep Binomial(q) entries, some but not all."""
    make_ref, _, _, shape = CASES[name]
    masks = [replayed_mask(name, make_ref(0.4), shape, 0.4, s) for s in range(64)]
    kept, total = sum(int(m.sum()) for m in masks), sum(m.size for m in masks)
    assert_binomial(kept, total, 0.6, f"{name} kept mask entries")
    assert 0 < kept < total


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("name", "p"), NAME_P)
def test_module_train_matches_functional(name, p, seed):
    """A module under torch.manual_seed(s) equals its functional op with a generator seeded s."""
    _, op, make_module, shape = CASES[name]
    x, dout = inputs(shape, seed)
    y_f, dx_f = run_torch(op, x, dout, p, True, gen(seed))
    module = make_module(p)
    torch.manual_seed(seed)
    y_m, dx_m = run_torch(lambda x, p, t, g: module(x), x, dout, p, True, None)
    np.testing.assert_array_equal(y_m, y_f)
    np.testing.assert_array_equal(dx_m, dx_f)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("name", "p"), NAME_P)
def test_module_matches_functional_under_global_seed(name, p, seed):
    """Module and functional op (generator=None) agree when the global seed is reset before each."""
    _, op, make_module, shape = CASES[name]
    x, dout = inputs(shape, seed)
    torch.manual_seed(seed)
    y_f, dx_f = run_torch(op, x, dout, p, True, None)
    module = make_module(p)
    torch.manual_seed(seed)
    y_m, dx_m = run_torch(lambda x, p, t, g: module(x), x, dout, p, True, None)
    np.testing.assert_array_equal(y_m, y_f)
    np.testing.assert_array_equal(dx_m, dx_f)


@pytest.mark.parametrize(("name", "p"), NAME_P)
def test_module_eval_matches_functional(name, p):
    """module.eval() applies the functional op's training=False rule."""
    _, op, make_module, shape = CASES[name]
    x, dout = inputs(shape, 5)
    y_f, dx_f = run_torch(op, x, dout, p, False, None)
    module = make_module(p).eval()
    y_m, dx_m = run_torch(lambda x, p, t, g: module(x), x, dout, p, False, None)
    np.testing.assert_array_equal(y_m, y_f)
    np.testing.assert_array_equal(dx_m, dx_f)
