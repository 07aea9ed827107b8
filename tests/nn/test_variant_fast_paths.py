"""The shared-mask variants' eager fast path (numba words straight into a small mask, then one
broadcast multiply) equals the operator path (the ``dropkit::scaled_keep_mask`` op, here fed
by the NumPy Philox reference) bit for bit, forward and backward, in every layout and dtype;
and both equal the closed form ``x * (keep_mask * scale)`` with the NumPy reference mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dropkit.functional as F
from dropkit.functional.mask import mask_shape
from dropkit.rng import keep_mask

SEED, OFFSET, P = 2**40 + 17, 5, 0.3


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return x.contiguous(memory_format=fmt)


# name -> (op(x, **rng), input shape, shared dims, scale)
OPS = {
    "dropout1d": (lambda x, **k: F.dropout1d(x, P, **k), (3, 4, 7), (2,), 1 / (1 - P)),
    "dropout2d": (lambda x, **k: F.dropout2d(x, P, **k), (3, 4, 5, 6), (2, 3), 1 / (1 - P)),
    "dropout3d": (lambda x, **k: F.dropout3d(x, P, **k), (2, 3, 4, 5, 3), (2, 3, 4), 1 / (1 - P)),
    "drop_path": (lambda x, **k: F.drop_path(x, P, **k), (6, 5, 8), (1, 2), 1 / (1 - P)),
    "drop_path-batch": (
        lambda x, **k: F.drop_path(x, P, mode="batch", **k),
        (6, 5, 8),
        (0, 1, 2),
        1 / (1 - P),
    ),
    "drop_path-noscale": (
        lambda x, **k: F.drop_path(x, P, scale_by_keep=False, **k),
        (6, 5, 8),
        (1, 2),
        1.0,
    ),
    "locked": (lambda x, **k: F.locked_dropout(x, P, **k), (7, 3, 5), (0,), 1 / (1 - P)),
    "locked-batch-first": (
        lambda x, **k: F.locked_dropout(x, P, batch_first=True, **k),
        (3, 7, 5),
        (1,),
        1 / (1 - P),
    ),
}
LAYOUTS = {
    "contiguous": lambda x: x,
    "transposed": lambda x: x.transpose(0, -1).contiguous().transpose(0, -1),
    "sliced": lambda x: torch.cat([x, x], dim=-1)[..., ::2],
    "channels_last": _channels_last,
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _cases():
    for name, (_, shape, _, _) in OPS.items():
        for layout in LAYOUTS:
            if layout == "channels_last" and len(shape) not in (4, 5):
                continue
            yield name, layout


def _input(name: str, layout: str, dtype: torch.dtype) -> torch.Tensor:
    shape = OPS[name][1]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return LAYOUTS[layout](x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "layout"), list(_cases()))
def test_fast_path_equals_operator_path(name, layout, dtype):
    """Eager numba fast path vs the custom-op path (NumPy reference words): same values, same
    gradient, same strides, bit for bit."""
    op = OPS[name][0]
    x = _input(name, layout, dtype).requires_grad_(True)
    x_ref = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = op(x, seed=SEED, offset=OFFSET)
    y_ref = op(x_ref, seed=SEED, offset=OFFSET, backend="reference")
    assert y.dtype == dtype
    # torch's preserve_format rule: a dense input's strides are kept, others become contiguous
    assert y.stride() == torch.empty_like(x).stride() == y_ref.stride()
    assert torch.equal(y, y_ref)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    (g,) = torch.autograd.grad(y, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x_ref, dy)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize(("name", "layout"), list(_cases()))
def test_closed_form_with_numpy_reference_mask(name, layout):
    """y = x * (keep * scale) and dx = dy * (keep * scale), keep from dropkit.rng.keep_mask
    (NumPy) at positions offset + (row-major mask index), in float64 exactly."""
    op, _, dims, scale = OPS[name]
    x = _input(name, layout, torch.float64).requires_grad_(True)
    keep = keep_mask(SEED, OFFSET, mask_shape(x.shape, dims), P)
    m = torch.from_numpy(keep.astype(np.float64) * scale)
    y = op(x, seed=SEED, offset=OFFSET)
    assert torch.equal(y, x.detach() * m)
    dy = torch.randn(y.shape, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(g, dy * m)
    assert 0 < keep.sum() < keep.size or keep.size < 4  # the mask is not degenerate


def test_drop_path_row_mask_is_the_documented_bernoulli_mask():
    """Sample n's decision is Bernoulli-mask position offset + n (the contract other
    stochastic-depth implementations reproduce)."""
    x = torch.ones(64, 3, 4)
    y = F.drop_path(x, 0.4, seed=9, offset=123)
    keep = F.bernoulli_mask((64, 1, 1), 0.4, seed=9, offset=123)
    assert torch.equal(y != 0, keep.expand_as(y))
    assert torch.equal(y[keep.expand_as(y)], torch.full((int(keep.sum()) * 12,), 1 / 0.6))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_feature_alpha_fast_path_equals_operator_path_and_formula(layout, dtype):
    """feature_alpha_dropout: fast == operator path (bitwise, values and gradient); in float64
    both equal a * where(keep, x, alpha') + b with the NumPy reference mask."""
    from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine

    x = LAYOUTS[layout](torch.randn(3, 4, 5, 6, dtype=torch.float64).to(dtype))
    x.requires_grad_(True)
    x_ref = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    y = F.feature_alpha_dropout(x, P, True, seed=SEED, offset=OFFSET)
    y_ref = F.feature_alpha_dropout(x_ref, P, True, seed=SEED, offset=OFFSET, backend="reference")
    assert torch.equal(y, y_ref)
    assert y.stride() == x.stride()
    dy = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert torch.equal(*(torch.autograd.grad(o, i, dy)[0] for o, i in ((y, x), (y_ref, x_ref))))
    if dtype == torch.float64:
        keep = torch.from_numpy(keep_mask(SEED, OFFSET, (3, 4, 1, 1), P))
        a, b = alpha_dropout_affine(P)
        assert torch.equal(y, torch.where(keep, x.detach(), ALPHA_PRIME) * a + b)


@pytest.mark.parametrize("name", list(OPS))
def test_autograd_saves_only_the_small_mask(name):
    """The forward keeps the (N, C, 1, ...)-sized mask for backward, never a full-size one."""
    op, shape, dims, _ = OPS[name]
    x = torch.randn(shape, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel()) or t, lambda t: t
    ):
        op(x * 1.0, seed=1)
    assert saved
    assert max(saved) == int(np.prod(mask_shape(shape, dims)))
