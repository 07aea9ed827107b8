"""DropBlock2d / DropBlock3d and the mask helpers of dropkit.reference.dropblock."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from dropkit.reference import DropBlock2d, DropBlock3d, gradcheck
from dropkit.reference.dropblock import block_extent, dilate, drop_probability, seed_probability
from tests.stats import assert_binomial, assert_within


def _seeds(valid: tuple[int, ...], *anchors: tuple[int, ...]) -> np.ndarray:
    seeds = np.zeros(valid, dtype=bool)
    for anchor in anchors:
        seeds[anchor] = True
    return seeds


@pytest.mark.parametrize(
    ("spatial", "block", "anchors", "expected_slices"),
    [
        ((6, 7), 3, [(1, 2)], [(slice(1, 4), slice(2, 5))]),  # odd block, H != W
        ((5, 4), 2, [(3, 0)], [(slice(3, 5), slice(0, 2))]),  # even block, bottom-left corner
        ((5, 4), 2, [(0, 0), (1, 1)], [(slice(0, 2), slice(0, 2)), (slice(1, 3), slice(1, 3))]),
        ((2, 6), 3, [(0, 3)], [(slice(0, 2), slice(3, 6))]),  # block clipped to (2, 3)
        ((4, 5, 3), 2, [(2, 1, 1)], [(slice(2, 4), slice(1, 3), slice(1, 3))]),  # 3-D cube
    ],
)
def test_dilate_places_top_left_anchored_blocks(spatial, block, anchors, expected_slices):
    """A hand-placed seed at i drops exactly [i_d, i_d + b_d) in every spatial dim."""
    extent = block_extent(block, spatial)
    valid = tuple(n - b + 1 for n, b in zip(spatial, extent, strict=True))
    expected = np.zeros(spatial, dtype=bool)
    for window in expected_slices:
        expected[window] = True
    np.testing.assert_array_equal(dilate(_seeds(valid, *anchors), extent), expected)


def test_dilate_keeps_leading_dims_independent():
    """Seeds of different (N, C) slices only drop blocks in their own slice."""
    seeds = np.zeros((2, 3, 4, 5), dtype=bool)
    seeds[1, 2, 3, 4] = True
    dropped = dilate(seeds, (3, 3))
    assert dropped.shape == (2, 3, 6, 7)
    assert dropped.sum() == 9
    assert dropped[1, 2, 3:6, 4:7].all()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("layer_cls", [DropBlock2d, DropBlock3d])
def test_forward_backward_with_explicit_mask(layer_cls, shared):
    """Explicit keep mask: y = x*mask*count/kept and dx = dout*mask*count/kept per sample."""
    rng = np.random.default_rng(0)
    spatial = (6, 7) if layer_cls is DropBlock2d else (4, 5, 3)
    x = rng.standard_normal((3, 2, *spatial))
    dout = rng.standard_normal(x.shape)
    mask = rng.random((3, 1 if shared else 2, *spatial)) < 0.6
    mask[2] = False  # a sample that keeps nothing gets scale 0
    layer = layer_cls(0.3, 2, shared_channels=shared, rng=1)
    out = layer.forward(x, mask=mask)
    dx = layer.backward(dout)
    for n in range(2):
        scale = mask[n].size / mask[n].sum()
        np.testing.assert_allclose(out[n], x[n] * mask[n] * scale, rtol=1e-14, atol=0)
        np.testing.assert_allclose(dx[n], dout[n] * mask[n] * scale, rtol=1e-14, atol=0)
    assert not out[2].any()
    assert not dx[2].any()


@pytest.mark.parametrize(("block", "seed"), [(2, 0), (3, 1), (5, 2)])
def test_dropped_regions_are_unions_of_full_blocks(block, seed):
    """Every dropped position lies in some fully dropped b x b window inside the map."""
    layer = DropBlock2d(0.15, block, rng=seed)
    layer.forward(np.ones((8, 4, 11, 13)))
    dropped = ~layer.mask
    assert dropped.any()
    full = sliding_window_view(dropped, (block, block), axis=(2, 3)).all(axis=(-2, -1))
    np.testing.assert_array_equal(dilate(full, (block, block)), dropped)
    # Control: the same check rejects a per-element (non-block) mask.
    scattered = np.random.default_rng(seed).random(dropped.shape) < 0.15
    full = sliding_window_view(scattered, (block, block), axis=(2, 3)).all(axis=(-2, -1))
    assert not np.array_equal(dilate(full, (block, block)), scattered)


@pytest.mark.parametrize("shared", [False, True])
def test_channel_masks_independent_unless_shared(shared):
    """Default: one mask per (sample, channel); shared_channels: one (N, 1, H, W) mask."""
    layer = DropBlock2d(0.3, 3, shared_channels=shared, rng=0)
    out = layer.forward(np.ones((2, 4, 12, 12)))
    assert layer.mask.shape == (2, 1 if shared else 4, 12, 12)
    assert (~layer.mask).any()
    same = [np.array_equal(out[n, 0] > 0, out[n, c] > 0) for n in range(2) for c in range(1, 4)]
    assert all(same) if shared else not any(same)


@pytest.mark.parametrize("shared", [False, True])
def test_each_sample_keeps_its_sum_exactly(shared):
    """x = ones: every sample that keeps something sums to its element count C*H*W."""
    layer = DropBlock2d(0.4, 3, shared_channels=shared, rng=3)
    out = layer.forward(np.ones((50, 3, 9, 8)))
    kept_any = layer.mask.reshape(50, -1).any(axis=1)
    assert kept_any.all()
    np.testing.assert_allclose(out.reshape(50, -1).sum(axis=1), 3 * 9 * 8, rtol=1e-12)


def test_block_size_one_mean_output_equals_input():
    """block_size=1 (exchangeable positions): per-position mean output over draws equals x."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 5, 6))
    layer = DropBlock2d(0.3, 1, rng=1)
    draws = np.stack([layer.forward(x) for _ in range(4000)])
    # E[y_i] = x_i * P(kept > 0) with P(kept = 0) = 0.3**90, negligible; sd from the draws.
    sd = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    for idx in np.ndindex(x.shape):
        assert_within(draws[(slice(None), *idx)].mean(), x[idx], sd[idx], f"mean y at {idx}")


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_block_size_one_is_per_element_dropout(p):
    """block_size=1: gamma = p, drop_probability = p and kept count ~ Binomial(n, 1-p)."""
    spatial = (7, 9)
    assert seed_probability(p, 1, spatial) == pytest.approx(p, rel=1e-12)
    np.testing.assert_allclose(drop_probability(p, 1, spatial), p, rtol=1e-12)
    layer = DropBlock2d(p, 1, rng=4)
    layer.forward(np.ones((100, 8, *spatial)))
    assert_binomial(int(layer.mask.sum()), layer.mask.size, 1 - p, "kept elements")


@pytest.mark.parametrize(
    ("layer_cls", "p", "block", "spatial"),
    [
        (DropBlock2d, 0.3, 3, (8, 9)),
        (DropBlock2d, 0.5, 2, (5, 4)),
        (DropBlock2d, 0.2, 9, (4, 5)),  # block clipped to the whole map
        (DropBlock3d, 0.3, 2, (3, 4, 5)),
    ],
)
def test_dropped_rate_per_position_matches_drop_probability(layer_cls, p, block, spatial):
    """Each position's drop count over independent (N, C) masks ~ Binomial(n, drop_probability)."""
    layer = layer_cls(p, block, rng=5)
    x = np.ones((500, 8, *spatial))
    dropped = np.zeros(spatial, dtype=np.int64)
    for _ in range(5):
        layer.forward(x)
        dropped += (~layer.mask).sum(axis=(0, 1))
    trials = 5 * 500 * 8
    probs = drop_probability(p, block, spatial)
    for idx in np.ndindex(spatial):
        assert_binomial(int(dropped[idx]), trials, float(probs[idx]), f"drops at {idx}")
    # The per-map count sums correlated positions: check its mean against its own sample sd.
    layer.forward(np.ones((4000, 1, *spatial)))
    totals = (~layer.mask).reshape(4000, -1).sum(axis=1)
    sd = totals.std(ddof=1) / np.sqrt(totals.size)
    assert_within(totals.mean(), probs.sum(), sd, "dropped positions per map")


@pytest.mark.parametrize(
    ("p", "block", "spatial"), [(0.1, 3, (20, 20)), (0.3, 5, (16, 12)), (0.2, 2, (6, 6, 6))]
)
def test_drop_probability_mean_is_slightly_below_p(p, block, spatial):
    """Overlaps: p - b^(2d) gamma^2 / 2 <= mean drop probability <= p (Bonferroni bounds)."""
    gamma = seed_probability(p, block, spatial)
    probs = drop_probability(p, block, spatial)
    cover_max = block ** len(spatial)
    assert probs.mean() <= p
    assert probs.mean() >= p - cover_max**2 * gamma**2 / 2
    assert probs.max() < cover_max * gamma  # never above the no-overlap value


def test_drop_probability_interior_below_p_on_large_map():
    """Far from the border of a large map, overlaps make the drop rate a bit less than p."""
    # (On small maps gamma's border factor HW/((H-b+1)(W-b+1)) pushes the interior above p.)
    probs = drop_probability(0.1, 3, (200, 200))
    gamma = seed_probability(0.1, 3, (200, 200))
    interior = probs[2:-2, 2:-2]
    assert np.all(interior < 0.1)
    assert np.all(interior >= 9 * gamma - 36 * gamma**2)
    assert np.ptp(interior) == 0


@pytest.mark.parametrize(
    ("p", "block", "spatial"),
    [(0.1, 3, (6, 7)), (0.25, 2, (5, 4)), (0.2, 3, (5, 6, 7)), (0.9, 1, (3, 3)), (0.6, 4, (4, 9))],
)
def test_seed_probability_formula(p, block, spatial):
    """gamma = p * prod(n) / (prod(b) * prod(n - b + 1)), inside [0, 1]."""
    valid = np.prod([n - block + 1 for n in spatial])
    expected = p * np.prod(spatial) / (block ** len(spatial) * valid)
    gamma = seed_probability(p, block, spatial)
    assert gamma == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= gamma <= 1.0


@pytest.mark.parametrize(("block", "spatial"), [(3, (6, 7)), (9, (4, 5)), (2, (3, 3, 3))])
def test_seed_probability_is_one_at_p_one_and_zero_at_p_zero(block, spatial):
    """p = 1 seeds everywhere (every position dropped); p = 0 seeds nowhere."""
    assert seed_probability(1.0, block, spatial) == 1.0
    assert seed_probability(0.0, block, spatial) == 0.0
    np.testing.assert_array_equal(drop_probability(1.0, block, spatial), 1.0)


def test_block_larger_than_map_is_clipped():
    """block_size 9 on a 4x5 map: extent (4, 5), gamma = p, whole maps dropped or kept."""
    assert block_extent(9, (4, 5)) == (4, 5)
    assert seed_probability(0.3, 9, (4, 5)) == pytest.approx(0.3, rel=1e-12)
    layer = DropBlock2d(0.3, 9, rng=0)
    layer.forward(np.ones((2000, 1, 4, 5)))
    per_map = layer.mask.reshape(2000, -1)
    assert np.all(per_map.all(axis=1) | ~per_map.any(axis=1))
    assert_binomial(int(per_map[:, 0].sum()), 2000, 0.7, "kept maps")


@pytest.mark.parametrize("layer_cls", [DropBlock2d, DropBlock3d])
def test_p_one_gives_zeros_and_zero_gradient(layer_cls):
    """p = 1: all zeros, zero gradient, no NaN (scale defined as 0)."""
    shape = (2, 3, 4, 5) if layer_cls is DropBlock2d else (2, 3, 4, 5, 3)
    layer = layer_cls(1.0, 3, rng=0)
    with np.errstate(all="raise"):
        out = layer.forward(np.full(shape, np.float64(7.0)))
        dx = layer.backward(np.ones(shape))
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(dx, 0.0)


def test_p_zero_and_eval_pass_input_through():
    """p = 0 keeps everything; eval returns x itself and backward is the identity."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    layer = DropBlock2d(0.0, 3, rng=0)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(2 * x), 2 * x)
    assert DropBlock2d(0.5, 2).forward(x, training=False) is x
    x3 = x[:, :, None]
    layer3 = DropBlock3d(0.5, 2, rng=0)
    assert layer3.forward(x3, training=False) is x3
    np.testing.assert_array_equal(layer3.backward(3 * x3), 3 * x3)


def test_float32_stays_float32():
    """float32 input gives float32 output and gradient."""
    x = np.ones((2, 3, 8, 8), dtype=np.float32)
    layer = DropBlock2d(0.3, 3, rng=0)
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(x).dtype == np.float32


@pytest.mark.parametrize(
    ("layer", "shape"),
    [(DropBlock2d(0.3, 3, rng=0), (2, 3, 6, 7)), (DropBlock3d(0.3, 2, rng=1), (2, 2, 4, 5, 3))],
)
def test_gradcheck(layer, shape):
    """Analytic gradient matches finite differences in float64."""
    x = np.random.default_rng(2).standard_normal(shape)
    assert gradcheck(layer, x)
    assert layer.mask.any()
    assert not layer.mask.all()


def _call_with_mask(layer, mask_shape):
    return layer.forward(np.ones((2, 3, 6, 7)), mask=np.ones(mask_shape, dtype=bool))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: DropBlock2d().forward(np.ones((2, 3, 4))), re.escape("(N, C, H, W)")),
        (lambda: DropBlock3d().forward(np.ones((2, 3, 4, 5))), re.escape("(N, C, D, H, W)")),
        (lambda: DropBlock2d(0.1, 0), "block_size"),
        (lambda: DropBlock2d(0.1, 2.5), "block_size"),
        (lambda: DropBlock3d(0.1, True), "block_size"),
        (lambda: DropBlock2d(-0.1, 3), re.escape("[0, 1]")),
        (lambda: DropBlock2d(1.5, 3), re.escape("[0, 1]")),
        (lambda: DropBlock2d(float("nan"), 3), re.escape("[0, 1]")),
        (lambda: _call_with_mask(DropBlock2d(0.3, 3), (2, 1, 6, 7)), "mask has shape"),
        (lambda: _call_with_mask(DropBlock2d(0.3, 3, shared_channels=True), (2, 3, 6, 7)), "mask"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Wrong rank names the layout; bad block_size, p outside [0, 1] and bad masks raise."""
    with pytest.raises(ValueError, match=match):
        call()
