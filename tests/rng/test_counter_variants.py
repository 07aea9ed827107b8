"""The custom ops (opcheck) and the fused/Gaussian/DropBlock variants on the Philox stream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dropkit.functional as F
from dropkit.reference.alpha import alpha_dropout_affine
from dropkit.reference.dropblock import block_extent, dilate, seed_probability
from dropkit.rng import keep_mask, normal, ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_opcheck(backend, dtype):
    """torch.library.opcheck passes for the three custom ops."""
    seed = torch.tensor(7)
    x = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    b = torch.randn(5, dtype=dtype, requires_grad=True)
    r = torch.randn(3, 5, dtype=dtype, requires_grad=True)
    torch.library.opcheck(ops.philox_dropout, (x, seed, 3, 0.25, 1 / 0.75, backend))
    torch.library.opcheck(ops.philox_words, (seed, 3, 10, torch.device("cpu"), backend))
    torch.library.opcheck(ops.bias_dropout_add, (x, b, r, seed, 3, 0.25, 1 / 0.75, backend))


@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_bias_dropout_add_matches_composition(p, offset):
    """bias_dropout_add == residual + dropout(x + bias) with the same seed (float64)."""
    x, r = torch.randn(2, 6, 9, dtype=torch.float64)
    b = torch.randn(9, dtype=torch.float64)
    out = F.bias_dropout_add(x, b, r, p, seed=12, offset=offset)
    expected = r + F.dropout(x + b, p, seed=12, offset=offset)
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=0)
    torch.manual_seed(4)
    drawn = F.bias_dropout_add(x, b, r, p)
    torch.manual_seed(4)
    torch.testing.assert_close(drawn, r + F.dropout(x + b, p), rtol=1e-15, atol=0)


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_bias_dropout_add_gradcheck(backend):
    """gradcheck (float64) of bias_dropout_add with respect to x, bias and residual."""
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b, r: F.bias_dropout_add(x, b, r, 0.4, seed=3, offset=1, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b, r))


@pytest.mark.parametrize(
    ("shapes", "dtypes", "error", "match"),
    [
        (((2, 5), (5,), (2, 4)), None, ValueError, "residual"),
        (((2, 5), (4,), (2, 5)), None, ValueError, "bias"),
        (((2, 5), (1, 5), (2, 5)), None, ValueError, "bias"),
        (((2, 5), (5,), (2, 5)), (torch.float32, torch.float64, torch.float32), TypeError, "dtype"),
        (((2, 5), (5,), (2, 5)), (torch.float32, torch.float32, torch.float16), TypeError, "dtype"),
    ],
)
def test_bias_dropout_add_bad_arguments(shapes, dtypes, error, match):
    """Shape mismatches raise ValueError naming bias/residual; dtype mismatch raises TypeError."""
    dtypes = dtypes or (torch.float32,) * 3
    x, b, r = (torch.zeros(s, dtype=d) for s, d in zip(shapes, dtypes, strict=True))
    with pytest.raises(error, match=match):
        F.bias_dropout_add(x, b, r, 0.5, seed=1)


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 2**33 + 5])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5)])
def test_standard_normal_and_gaussian_noise_follow_reference(shape, offset):
    """standard_normal/gaussian_noise equal the NumPy dropkit.rng.normal (rtol 1e-12, float64)."""
    z = normal(2**40 + 3, offset, shape)
    out = F.standard_normal(shape, seed=2**40 + 3, offset=offset)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), z, rtol=1e-12, atol=1e-14)
    p = 0.2
    noise = F.gaussian_noise(shape, p, dtype=torch.float64, seed=2**40 + 3, offset=offset)
    np.testing.assert_allclose(noise.numpy(), 1 + math.sqrt(p / (1 - p)) * z, rtol=1e-12)


def test_gaussian_dropout_shares_the_seed_draw():
    """gaussian_dropout draws its seed as gaussian_noise does: y == x * noise under one seed."""
    x = torch.randn(5, 9, dtype=torch.float64)
    torch.manual_seed(13)
    y = F.gaussian_dropout(x, 0.3)
    torch.manual_seed(13)
    noise = F.gaussian_noise(x.shape, 0.3, dtype=torch.float64)
    assert torch.equal(y, x * noise)
    assert torch.equal(
        F.gaussian_dropout(x, 0.3, seed=4, offset=2),
        x * F.gaussian_noise(x.shape, 0.3, dtype=x.dtype, seed=4, offset=2),
    )


@pytest.mark.parametrize("shared_channels", [False, True])
@pytest.mark.parametrize(
    ("shape", "block_size"), [((2, 3, 9, 8), 1), ((2, 3, 9, 8), 3), ((1, 2, 4, 5, 6), 2)]
)
def test_drop_block_mask_seeds_follow_keep_mask(shape, block_size, shared_channels):
    """DropBlock seeds are ~keep_mask(seed, offset, seed grid, gamma), dilated into blocks."""
    p, seed, offset = 0.3, 17, 5
    spatial = shape[2:]
    extent = block_extent(block_size, spatial)
    lead = (shape[0], 1 if shared_channels else shape[1])
    valid = tuple(s - b + 1 for s, b in zip(spatial, extent, strict=True))
    gamma = seed_probability(p, block_size, spatial)
    seeds = ~keep_mask(seed, offset, lead + valid, gamma)
    expected = ~dilate(seeds, extent)
    out = F.drop_block_mask(
        shape, p, block_size, shared_channels=shared_channels, seed=seed, offset=offset
    )
    assert torch.equal(out, torch.from_numpy(expected))
    assert seeds.any()


@pytest.mark.parametrize("op", ["gaussian", "alpha"])
def test_gaussian_and_alpha_dropout_store_only_the_seed(op):
    """Gaussian and alpha dropout regenerate their noise/mask in backward: autograd keeps only
    the 8-byte seed, and the gradient still equals the regenerated noise/mask's."""
    x = torch.randn(4096, dtype=torch.float64, requires_grad=True)
    fn = F.gaussian_dropout if op == "gaussian" else F.alpha_dropout
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        y = fn(x, 0.3, True, seed=11)
    assert sum(saved) == 8
    y.backward(torch.ones_like(y))
    if op == "gaussian":
        expected = F.gaussian_noise((4096,), 0.3, dtype=torch.float64, seed=11)
    else:
        a, _ = alpha_dropout_affine(0.3)
        expected = F.bernoulli_mask((4096,), 0.3, seed=11).double() * a
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def test_gaussian_and_alpha_custom_ops_pass_opcheck():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    seed = torch.tensor(5)
    torch.library.opcheck(torch.ops.dropkit.gaussian_dropout.default, (x, seed, 2, 0.4, "numba"))
    torch.library.opcheck(
        torch.ops.dropkit.alpha_dropout.default, (x, seed, 2, 0.4, [3, 5], "numba")
    )
