"""dropkit.nn side by side with torch's own dropout layers (and timm / torchvision when present).

Both sides of each pair see the same input; every statistic is checked against its analytic value
within 6 sigma (tests/stats.py), so the two implementations follow the same distribution.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import dropkit.nn as dkn
from dropkit import reference as R
from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from tests.helpers import import_peer
from tests.stats import assert_binomial, assert_within

# name -> (dropkit module, torch module class, input shape for statistics); the mask has one
# entry per (N, C) for the channel variants and one per element for Dropout.
PAIRS = {
    "dropout": (dkn.Dropout, nn.Dropout, (1000, 1000)),
    "dropout1d": (dkn.Dropout1d, nn.Dropout1d, (400, 250, 3)),
    "dropout2d": (dkn.Dropout2d, nn.Dropout2d, (400, 250, 2, 2)),
    "dropout3d": (dkn.Dropout3d, nn.Dropout3d, (400, 250, 2, 1, 2)),
}
PAIR = pytest.mark.parametrize("name", list(PAIRS))
SIDES = pytest.mark.parametrize("side", ["dropkit", "torch"])


def layer(name: str, side: str, p: float) -> nn.Module:
    ours, theirs, _ = PAIRS[name]
    return ours(p) if side == "dropkit" else theirs(p)


def per_draw(y: torch.Tensor) -> torch.Tensor:
    """One value per mask entry: the flattened (N, C) slices' first element, or y itself."""
    return y.reshape(-1) if y.dim() == 2 else y.flatten(2)[..., 0].reshape(-1)


@PAIR
@SIDES
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_is_binomial(name, side, p):
    """Both implementations keep each mask entry with probability 1 - p."""
    torch.manual_seed(1)
    kept = per_draw(layer(name, side, p)(torch.ones(PAIRS[name][2]))) != 0
    assert_binomial(int(kept.sum()), kept.numel(), 1.0 - p, f"{side} {name} kept entries")


@PAIR
@SIDES
@pytest.mark.parametrize("p", [0.2, 0.7])
def test_mean_and_variance(name, side, p):
    """For constant c: mean c and variance c^2 p/q, with the sampling sd of n independent draws."""
    c, q = 3.0, 1.0 - p
    torch.manual_seed(2)
    y = per_draw(layer(name, side, p)(torch.full(PAIRS[name][2], c, dtype=torch.float64)))
    n = y.numel()
    assert_within(float(y.mean()), c, c * math.sqrt(p / q / n), f"{side} mean")
    # y = (c/q) B: the sample variance is (c/q)^2 f(1 - f), sd by the delta method in f.
    sd_var = (c / q) ** 2 * math.sqrt(p * q * (1.0 - 4.0 * p * q) / n)
    assert_within(float(y.var(correction=0)), c * c * p / q, sd_var, f"{side} variance")


@PAIR
@SIDES
def test_values_and_mask_sharing(name, side):
    """Outputs lie in {0, x/q}, and the channel variants keep or drop each (N, C) slice whole."""
    p, q = 0.4, 0.6
    x = torch.rand(6, 8, 3, 4, 5, dtype=torch.float64).add_(0.5)
    x = x.reshape(48, 60) if name == "dropout" else x.flatten(1 + int(name[-2]))
    torch.manual_seed(3)
    y = layer(name, side, p)(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / q, rtol=1e-12, atol=0)
    if name != "dropout":
        slices = kept.flatten(2)
        assert torch.equal(slices.all(-1), slices.any(-1)), "a channel was partly dropped"


@pytest.mark.parametrize(
    ("ours", "theirs", "shape"),
    [
        (dkn.Dropout, nn.Dropout, (4, 5)),
        (dkn.Dropout1d, nn.Dropout1d, (2, 3, 4)),
        (dkn.Dropout2d, nn.Dropout2d, (2, 3, 4, 5)),
        (dkn.Dropout3d, nn.Dropout3d, (2, 3, 4, 5, 6)),
        (dkn.AlphaDropout, nn.AlphaDropout, (4, 5)),
        (dkn.FeatureAlphaDropout, nn.FeatureAlphaDropout, (2, 3, 4, 5)),
    ],
)
def test_eval_is_identity_on_both(ours, theirs, shape):
    """In eval both implementations return the input unchanged."""
    x = torch.randn(shape)
    assert torch.equal(ours(0.5).eval()(x), x)
    assert torch.equal(theirs(0.5).eval()(x), x)


def test_dropout2d_three_dims_torch_guesses_dropkit_refuses():
    """torch reinterprets a 3-D input to Dropout2d (with a warning); dropkit raises instead."""
    x = torch.ones(2, 3, 4)
    with pytest.warns(UserWarning, match="3D input"):
        nn.Dropout2d(0.5)(x)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dkn.Dropout2d(0.5)(x)


def alpha_values(y: torch.Tensor) -> tuple[float, ...]:
    return tuple(sorted(float(v) for v in torch.unique(y)))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.8])
@pytest.mark.parametrize("feature", [False, True], ids=["alpha", "feature-alpha"])
def test_alpha_constants_match_torch(p, feature):
    """On x = 0 torch's dropped value is a*alpha' + b and its kept value b, dropkit's constants."""
    ours, theirs = (
        (dkn.FeatureAlphaDropout, nn.FeatureAlphaDropout)
        if feature
        else (dkn.AlphaDropout, nn.AlphaDropout)
    )
    a, b = alpha_dropout_affine(p)
    x = torch.zeros(400, 250, 2, dtype=torch.float64)
    torch.manual_seed(4)
    y_torch, y_ours = theirs(p)(x), ours(p)(x)
    dropped, kept = alpha_values(y_torch)
    assert dropped == pytest.approx(a * ALPHA_PRIME + b, rel=1e-12)
    assert kept == pytest.approx(b, rel=1e-12)
    assert alpha_values(y_ours) == pytest.approx((dropped, kept), rel=1e-12)
    for side, y in (("torch", y_torch), ("dropkit", y_ours)):
        draws = y[..., 0].reshape(-1) if feature else y.reshape(-1)
        n_kept = int(torch.isclose(draws, torch.tensor(b, dtype=y.dtype)).sum())
        assert_binomial(n_kept, draws.numel(), 1.0 - p, f"{side} alpha kept")
        if feature:
            assert torch.equal(y[..., 0], y[..., 1]), f"{side}: channel not constant"


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("side", ["dropkit", "torch"])
def test_alpha_keeps_mean_zero_and_variance_one(p, side):
    """On standard normal input both alpha dropouts output mean 0 and variance 1 (analytic sd)."""
    n = 10**6
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    y = (dkn.AlphaDropout(p) if side == "dropkit" else nn.AlphaDropout(p))(x)
    a, b = alpha_dropout_affine(p)
    q, d = 1.0 - p, a * ALPHA_PRIME + b
    fourth = q * (3 * a**4 + 6 * a**2 * b**2 + b**4) + p * d**4  # E[y^4] of the mixture
    assert_within(float(y.mean()), 0.0, 1.0 / math.sqrt(n), f"{side} mean")
    assert_within(float(y.var()), 1.0, math.sqrt((fourth - 1.0) / n), f"{side} variance")


# -- timm / torchvision, only when installed -------------------------------------------------
def _row_pattern(y: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-sample keep flags, asserting each sample is wholly dropped or wholly x * scale."""
    flat_y, flat_x = y.flatten(1), x.flatten(1)
    kept = flat_y.ne(0).all(1)
    assert torch.equal(kept, flat_y.ne(0).any(1)), "a sample was partly dropped"
    torch.testing.assert_close(flat_y[kept], flat_x[kept] * scale, rtol=1e-12, atol=0)
    return kept


@pytest.mark.parametrize("p", [0.2, 0.6])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_droppath_matches_timm(p, scale_by_keep):
    """dropkit DropPath and timm DropPath: per-sample all-or-nothing, Binomial(q) kept, eval x."""
    timm_layers = import_peer("timm.layers")
    n, q = 20000, 1.0 - p
    x = torch.rand(n, 3, 2, dtype=torch.float64).add_(0.5)
    scale = 1.0 / q if scale_by_keep else 1.0
    ours = dkn.DropPath(p, scale_by_keep=scale_by_keep)
    theirs = timm_layers.DropPath(p, scale_by_keep=scale_by_keep)
    for side, module in (("dropkit", ours), ("timm", theirs)):
        torch.manual_seed(7)
        kept = _row_pattern(module(x), x, scale)
        assert_binomial(int(kept.sum()), n, q, f"{side} kept samples")
        assert torch.equal(module.eval()(x), x)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_droppath_matches_torchvision_stochastic_depth(mode):
    """dropkit DropPath and torchvision StochasticDepth: same mask geometry, rate and eval rule."""
    ops = import_peer("torchvision.ops")
    p, q, n, reps = 0.3, 0.7, 4000, 400
    x = torch.rand(n if mode == "row" else 4, 5, dtype=torch.float64).add_(0.5)
    for side, module in (
        ("dropkit", dkn.DropPath(p, mode)),
        ("torchvision", ops.StochasticDepth(p, mode)),
    ):
        torch.manual_seed(8)
        if mode == "row":
            kept = _row_pattern(module(x), x, 1.0 / q)
        else:  # one draw per call for the whole batch
            outs = [module(x) for _ in range(reps)]
            kept = torch.tensor([bool(y.ne(0).all()) for y in outs])
            assert all(bool(y.eq(0).all()) or torch.allclose(y, x / q, rtol=1e-12) for y in outs)
        assert_binomial(int(kept.sum()), kept.numel(), q, f"{side} {mode} kept")
        assert torch.equal(module.eval()(x), x)


def _union_of_blocks(dropped: torch.Tensor, block: int) -> bool:
    """Whether the dropped region of each (N, C) map is a union of whole block x block squares."""
    d = dropped.to(torch.float64)
    fully = 1.0 - TF.max_pool2d(1.0 - d, block, stride=1)  # anchors of wholly dropped blocks
    rebuilt = TF.max_pool2d(TF.pad(fully, [block - 1] * 4), block, stride=1)
    return torch.equal(rebuilt, d)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropblock_matches_torchvision(p):
    """dropkit's reference DropBlock2d and torchvision's drop whole blocks and keep the mean."""
    ops = import_peer("torchvision.ops")
    block, x = 3, torch.ones(8, 4, 16, 16, dtype=torch.float64)
    torch.manual_seed(9)
    y_tv = ops.DropBlock2d(p, block)(x)
    y_ref = torch.from_numpy(R.DropBlock2d(p, block, rng=9).forward(x.numpy()))
    for side, y in (("torchvision", y_tv), ("dropkit", y_ref)):
        dropped = y == 0
        assert bool(dropped.any()), f"{side}: nothing dropped"
        assert not bool(dropped.all()), f"{side}: everything dropped"
        assert _union_of_blocks(dropped, block), f"{side}: dropped region is not whole blocks"
        assert float(y.mean()) == pytest.approx(1.0, rel=1e-5), f"{side}: mean not preserved"
    assert torch.equal(ops.DropBlock2d(p, block).eval()(x), x)
