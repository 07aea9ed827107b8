"""drop_block_mask, drop_block2d/3d and DropBlock2d/3d against dropkit.reference.dropblock."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from dropkit import reference
from dropkit.functional import drop_block2d, drop_block3d, drop_block_mask
from dropkit.nn import DropBlock2d, DropBlock3d
from dropkit.reference.dropblock import block_extent, dilate, drop_probability, seed_probability
from dropkit.rng import draw_seed
from dropkit.rng import keep_mask as philox_keep_mask
from tests.helpers import clones, import_peer
from tests.stats import assert_binomial

# (spatial, block_size): odd, even, H != W, clipped to the map, one seed position, 3-D
PLANAR = [((6, 7), 3), ((5, 8), 2), ((9, 9), 4), ((3, 8), 5), ((4, 4), 4)]
CASES = [*PLANAR, ((4, 5, 6), 2), ((5, 4, 5), 3)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("spatial", "block"), CASES)
def test_mask_is_the_reference_dilation_of_the_seeds(spatial, block, shared):
    """Seeds are the positions the Philox reference does *not* keep at rate gamma on the valid
    grid (same seed, drawn from the same generator), dilated exactly as reference.dilate."""
    shape, p = (3, 4, *spatial), 0.35
    keep = drop_block_mask(shape, p, block, shared_channels=shared, generator=_gen(1))
    extent = block_extent(block, spatial)
    valid = tuple(n - b + 1 for n, b in zip(spatial, extent, strict=True))
    seed = int(draw_seed(_gen(1)))
    gamma = seed_probability(p, block, spatial)
    seeds = ~philox_keep_mask(seed, 0, (3, 1 if shared else 4, *valid), gamma)
    assert seeds.any()
    assert keep.dtype == torch.bool
    np.testing.assert_array_equal(keep.numpy(), ~dilate(seeds, extent))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize(("spatial", "block"), CASES)
def test_forward_and_backward_equal_the_reference(spatial, block, shared):
    """float64, identical mask: y and dx equal reference.DropBlock{2,3}d to rtol 1e-12."""
    shape, p, seed = (4, 3, *spatial), 0.5, 7
    x = torch.randn(shape, dtype=torch.float64, generator=_gen(0), requires_grad=True)
    dout = torch.randn(shape, dtype=torch.float64, generator=_gen(2))
    keep = drop_block_mask(shape, p, block, shared_channels=shared, generator=_gen(seed))
    assert (~keep).any()
    assert keep.any()
    op = drop_block2d if len(spatial) == 2 else drop_block3d
    y = op(x, p, block_size=block, shared_channels=shared, generator=_gen(seed))
    y.backward(dout)
    ref_cls = reference.DropBlock2d if len(spatial) == 2 else reference.DropBlock3d
    ref = ref_cls(p, block, shared_channels=shared)
    expected = ref.forward(x.detach().numpy(), mask=keep.numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(x.grad.numpy(), ref.backward(dout.numpy()), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("spatial", "block", "p"), [((7, 9), 3, 0.3), ((6, 6), 2, 0.5)])
def test_per_position_drop_rate_matches_drop_probability(spatial, block, p):
    """4000 independent maps: each position's drop count ~ Binomial(4000, P(dropped))."""
    keep = drop_block_mask((2000, 2, *spatial), p, block, generator=_gen(3))
    drops = (~keep).reshape(-1, *spatial).sum(0).numpy()
    prob = drop_probability(p, block, spatial)
    for idx in np.ndindex(spatial):
        assert_binomial(int(drops[idx]), 4000, float(prob[idx]), f"drops at {idx}")


@pytest.mark.parametrize(("block", "seed"), [(2, 0), (3, 1), (4, 2)])
def test_dropped_regions_are_unions_of_whole_blocks(block, seed):
    """Every dropped position lies in a fully dropped b x b window inside the map."""
    dropped = ~drop_block_mask((6, 3, 11, 13), 0.15, block, generator=_gen(seed)).numpy()
    assert dropped.any()
    full = sliding_window_view(dropped, (block, block), axis=(2, 3)).all(axis=(-2, -1))
    np.testing.assert_array_equal(dilate(full, (block, block)), dropped)
    scattered = np.random.default_rng(seed).random(dropped.shape) < 0.15  # control: fails
    full = sliding_window_view(scattered, (block, block), axis=(2, 3)).all(axis=(-2, -1))
    assert not np.array_equal(dilate(full, (block, block)), scattered)


@pytest.mark.parametrize("shared", [False, True])
def test_one_mask_per_channel_unless_shared(shared):
    y = drop_block2d(torch.ones(3, 4, 12, 12), 0.3, block_size=3, shared_channels=shared)
    zero = y == 0
    assert zero.any()
    same = [torch.equal(zero[n, 0], zero[n, c]) for n in range(3) for c in range(1, 4)]
    assert all(same) if shared else not any(same)


def test_block_larger_than_the_map_is_clipped():
    """Block 10 on a 4 x 6 map: extent (4, 6), one seed position, gamma = p: whole maps drop."""
    keep = drop_block_mask((4000, 1, 4, 6), 0.3, 10, generator=_gen(4))
    per_map = keep.flatten(1)
    assert bool((per_map.all(1) | ~per_map.any(1)).all())
    assert_binomial(int((~per_map.any(1)).sum()), 4000, 0.3, "fully dropped maps")
    # Clipped in one dim only: block (3, 5) on (3, 8) drops whole columns.
    keep = drop_block_mask((50, 2, 3, 8), 0.4, 5, generator=_gen(5))
    assert torch.equal(keep, keep[:, :, :1].expand_as(keep))


def test_each_sample_is_renormalised_and_empty_samples_give_zeros():
    """Map = one block: whole samples drop and give zeros (count/kept = 0 branch, checked
    against the reference); a sample of ones otherwise keeps its sum C*H*W."""
    shape = (40, 1, 4, 4)
    x = torch.randn(shape, dtype=torch.float64, generator=_gen(0), requires_grad=True)
    keep = drop_block_mask(shape, 0.5, 4, generator=_gen(6))
    empty = ~keep.flatten(1).any(1)
    assert empty.any()
    assert not empty.all()
    y = drop_block2d(x, 0.5, block_size=4, generator=_gen(6))
    y.backward(torch.ones_like(y))
    ref = reference.DropBlock2d(0.5, 4)
    np.testing.assert_array_equal(y.detach().numpy(), ref.forward(x.detach().numpy(), mask=keep))
    np.testing.assert_array_equal(x.grad.numpy(), ref.backward(np.ones(shape)))
    z = drop_block2d(torch.ones(30, 3, 9, 8), 0.4, block_size=3, generator=_gen(7))
    torch.testing.assert_close(z.sum((1, 2, 3)), torch.full((30,), 216.0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("op", [drop_block2d, drop_block3d])
def test_p_one_gives_zeros_and_zero_grad_p_zero_keeps_all(op):
    shape = (2, 3, 5, 6) if op is drop_block2d else (2, 3, 4, 5, 3)
    x = torch.randn(shape, requires_grad=True)
    x_inf = x.detach().clone().fill_(float("inf"))
    assert not op(x_inf, 1.0, block_size=2).any()  # never inf * 0 = NaN
    y = op(x, 1.0, block_size=2)
    y.sum().backward()
    assert not y.any()
    assert not x.grad.any()
    assert torch.equal(op(x, 0.0, block_size=3), x)


def test_eval_returns_the_input_itself_and_empty_inputs_pass():
    x, v = torch.randn(2, 3, 8, 8), torch.randn(1, 2, 4, 4, 4)
    assert drop_block2d(x, 0.5, False, block_size=3) is x
    assert DropBlock3d(0.5, 3).eval()(v) is v
    for shape in ((0, 3, 5, 5), (2, 3, 0, 5)):  # gamma's formula would divide by zero
        assert drop_block2d(torch.ones(shape), 0.3).shape == shape


def test_inplace_writes_into_the_input():
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    expected = drop_block2d(x, 0.3, block_size=3, generator=_gen(8))
    out = drop_block2d(x, 0.3, block_size=3, inplace=True, generator=_gen(8))
    assert out is x
    assert torch.equal(x, expected)
    with pytest.raises(ValueError, match="inplace=False"):
        drop_block2d(torch.ones(1, 1, 4, 4, requires_grad=True), 0.3, inplace=True)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: drop_block2d(torch.ones(3, 8, 8)), ValueError, r"\(N, C, H, W\)"),
        (lambda: drop_block2d(torch.ones(1, 1, 3, 8, 8)), ValueError, r"\(N, C, H, W\)"),
        (lambda: drop_block3d(torch.ones(1, 1, 8, 8)), ValueError, r"\(N, C, D, H, W\)"),
        (lambda: drop_block2d(torch.ones(1, 1, 8, 8), block_size=0), ValueError, "block_size"),
        (lambda: drop_block2d(torch.ones(1, 1, 8, 8), block_size=2.5), ValueError, "block_size"),
        (lambda: DropBlock2d(0.1, block_size=True), ValueError, "block_size"),
        (lambda: drop_block2d(torch.ones(1, 1, 8, 8), 1.5), ValueError, r"\[0, 1\]"),
        (lambda: drop_block2d(torch.ones(1, 1, 8, 8), float("nan")), ValueError, r"\[0, 1\]"),
        (lambda: drop_block2d(torch.ones(1, 1, 8, 8, dtype=torch.long)), TypeError, "float"),
        (lambda: drop_block_mask((4, 8, 8), 0.1, 3), ValueError, "4 or 5 dims"),
    ],
)
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_gradcheck_with_the_mask_held_fixed():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    op = lambda t: drop_block2d(t, 0.3, block_size=2, generator=_gen(0))  # noqa: E731
    assert torch.autograd.gradcheck(op, (x,))
    v = torch.randn(1, 2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    op = lambda t: drop_block3d(t, 0.3, block_size=2, generator=_gen(1))  # noqa: E731
    assert torch.autograd.gradcheck(op, (v,))


@pytest.mark.parametrize("cls", [DropBlock2d, DropBlock3d])
def test_module_is_one_call_repr_state_dict_copy_and_pickle(cls):
    layer = cls(0.25, 2, shared_channels=True)
    assert (
        repr(layer) == f"{cls.__name__}(p=0.25, block_size=2, shared_channels=True, inplace=False)"
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer.p = 1.5
    x = torch.randn((2, 3, 6, 6) if cls is DropBlock2d else (2, 3, 4, 4, 4))
    torch.manual_seed(1)
    expected = layer(x)
    torch.manual_seed(1)
    op = drop_block2d if cls is DropBlock2d else drop_block3d
    assert torch.equal(expected, op(x, 0.25, block_size=2, shared_channels=True))
    assert layer.state_dict() == {}
    cls(0.25, 2, shared_channels=True).load_state_dict(layer.state_dict())
    for clone in clones(layer):
        assert type(clone) is cls
        assert repr(clone) == repr(layer)
        torch.manual_seed(1)
        assert torch.equal(clone(x), expected)


def test_module_under_torch_compile_fullgraph():
    layer = DropBlock2d(0.3, 3)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 4, 9, 10)
    torch.manual_seed(2)
    eager = layer(x)
    torch.manual_seed(2)
    out = compiled(x)
    assert torch.equal(out, eager)  # aot_eager draws from the same global generator
    assert (out == 0).any()
    layer.eval()
    assert torch.equal(compiled(x), x)


def test_side_by_side_with_torchvision():
    """Odd blocks: torchvision centres blocks on valid-grid seeds with the same gamma, so its
    per-position drop rates are exactly reference.drop_probability too."""
    ops = import_peer("torchvision.ops")
    spatial, block, p = (7, 8), 3, 0.3
    torch.manual_seed(0)
    y = ops.DropBlock2d(p, block)(torch.ones(2000, 2, *spatial))
    drops = (y == 0).reshape(-1, *spatial).sum(0).numpy()
    prob = drop_probability(p, block, spatial)
    for idx in np.ndindex(spatial):
        assert_binomial(int(drops[idx]), 4000, float(prob[idx]), f"torchvision drops at {idx}")


def test_side_by_side_with_timm():
    """timm's seed region and normalisation vary by version: compare only that both drop a
    fraction strictly between 0 and p (overlapping blocks)."""
    layers = import_peer("timm.layers")
    x = torch.ones(500, 2, 12, 12)
    for layer in (layers.DropBlock2d(0.2, 3), DropBlock2d(0.2, 3)):
        assert 0.0 < (layer(x) == 0).float().mean().item() < 0.2, type(layer)
