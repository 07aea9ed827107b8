"""The eager fast paths give the bits of the general paths they short-cut.

Plain eager CPU calls skip ``torch.func``-ready autograd Functions, argument checks and operator
dispatch (:meth:`dropkit.rng.function.PhiloxDropout.call`, the shared-mask fill, the fused alpha
kernel, the fused half kernel). Each is compared here, forward and backward, with the path that
``torch.func`` transforms take, which the reference tests pin to the NumPy oracle.
"""

from __future__ import annotations

import pytest
import torch

import dropkit.functional as F
from dropkit.functional.alpha import _AlphaDropout
from dropkit.functional.mask import _scaled_keep_op, mask_shape
from dropkit.rng import cpu
from dropkit.rng.function import PhiloxDropout

pytestmark = pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba")
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _grad_pair(fast, general, x, dy):
    xa = x.detach().clone().requires_grad_(True)
    xb = x.detach().clone().requires_grad_(True)
    ya, yb = fast(xa), general(xb)
    ya.backward(dy)
    yb.backward(dy)
    return ya, yb, xa.grad, xb.grad


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_fast_path_equals_the_function_path(dtype):
    x = torch.randn(37, 53).to(dtype)
    dy = torch.randn(37, 53).to(dtype)
    seed = torch.tensor(123)

    def general(t):  # what torch.func transforms run: the setup_context Function
        return PhiloxDropout.apply(t, seed, 5, 0.3, 1 / 0.7, "numba")

    ya, yb, ga, gb = _grad_pair(lambda t: F.dropout(t, 0.3, seed=123, offset=5), general, x, dy)
    assert torch.equal(ya, yb)
    assert torch.equal(ga, gb)
    torch.manual_seed(7)
    default = F.dropout(x, 0.3)  # the fast path's own seed draw
    torch.manual_seed(7)
    assert torch.equal(default, F.dropout(x, 0.3, backend="numba"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_fast_path_equals_the_function_path(dtype):
    x = torch.randn(41, 29, dtype=torch.float64).to(dtype)
    dy = torch.randn(41, 29, dtype=torch.float64).to(dtype)
    seed = torch.tensor(99)
    ya, yb, ga, gb = _grad_pair(
        lambda t: F.alpha_dropout(t, 0.2, True, seed=99, offset=3),
        lambda t: _AlphaDropout.apply(t, seed, 3, 0.2, "numba"),
        x,
        dy,
    )
    assert torch.equal(ya, yb)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("op", "shape", "dims"),
    [
        (lambda t: F.dropout2d(t, 0.3, seed=8, offset=1), (4, 6, 5, 3), (2, 3)),
        (lambda t: F.drop_path(t, 0.3, seed=8, offset=1), (7, 5, 3), (1, 2)),
    ],
)
def test_shared_mask_fast_path_equals_the_operator(dtype, op, shape, dims):
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    scale = 1 / 0.7
    mask = _scaled_keep_op(
        torch.tensor(8), 1, list(mask_shape(shape, dims)), 0.3, scale, dtype, x.device, "numba"
    )
    assert torch.equal(op(x), x * mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("module", "op", "shape"),
    [
        ("Dropout1d", lambda t, g: F.dropout1d(t, 0.3, generator=g), (4, 6, 5)),
        ("Dropout2d", lambda t, g: F.dropout2d(t, 0.3, generator=g), (4, 6, 5, 3)),
        ("Dropout3d", lambda t, g: F.dropout3d(t, 0.3, generator=g), (2, 6, 5, 3, 2)),
        ("DropPath", lambda t, g: F.drop_path(t, 0.3, generator=g), (9, 5, 3)),
        ("LockedDropout", lambda t, g: F.locked_dropout(t, 0.3, generator=g), (7, 5, 3)),
    ],
)
def test_module_fast_paths_draw_what_the_functional_draws(dtype, module, op, shape):
    """A module's shortcut (mask shape written out, no re-validation) draws the seed from
    torch's generator and gives the functional's mask: same output, same gradient."""
    import dropkit.nn as dnn

    layer = getattr(dnn, module)(0.3)
    x = torch.randn(shape, dtype=torch.float64).to(dtype)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    torch.manual_seed(12345)

    def general(t):  # the functional, from a generator in the same state as torch's
        return op(t, torch.Generator().manual_seed(12345))

    ya, yb, ga, gb = _grad_pair(layer, general, x, dy)
    assert torch.equal(ya, yb)
    assert torch.equal(ga, gb)


@pytest.mark.parametrize("layout", ["expanded", "gapped", "transposed", "channels_last"])
def test_a_strided_gradient_gets_the_forward_mask(layout):
    """Backward regenerates the forward's mask for any gradient layout (``sum()`` gives an
    expanded one); a dense permuted tensor keeps its strides, an overlapping or gapped one
    comes back contiguous, as ``torch.empty_like`` gives."""
    torch.manual_seed(0)
    shape = (3, 4, 5, 6)
    base = torch.randn(shape)
    dy = {
        "expanded": torch.randn(1, 4, 1, 6).expand(shape),
        "scalar": torch.tensor(-1.7).expand(shape),  # the gradient of sum(), scaled
        "gapped": torch.randn(3, 4, 5, 12)[..., ::2],
        "transposed": torch.randn(6, 5, 4, 3).permute(3, 2, 1, 0),
        "channels_last": torch.randn(shape).contiguous(memory_format=torch.channels_last),
    }[layout]
    x = base.clone().requires_grad_(True)
    y = F.dropout(x, 0.4, seed=5)
    y.backward(dy)
    keep = y.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(keep, dy * (1 / 0.6), 0.0), rtol=0, atol=0)
    direct = F.dropout(dy, 0.4, seed=5)
    torch.testing.assert_close(direct, torch.where(keep, dy * (1 / 0.6), 0.0), rtol=0, atol=0)
    if layout in ("transposed", "channels_last"):
        assert direct.stride() == dy.stride()
    else:
        assert direct.is_contiguous()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 2**14])
def test_the_by_address_entry_gives_the_array_kernels_bits(dtype, n):
    """Small tensors go to the kernels by address (no NumPy views); the bits are those of the
    array kernels, forward and for a gradient that is one value expanded."""
    from dropkit.rng.kernels import _wait, loaded_cpu
    from dropkit.rng.ops import _NUMBA_KIND, cached_threshold, numba_dropout

    _wait()  # the numba module loaded: small calls go by address
    kernels = cpu.masked_scale_kernel, cpu.masked_scale_half_kernel
    assert loaded_cpu() is cpu
    assert n <= cpu.ADDRESS_MAX
    torch.manual_seed(n)
    x = torch.randn(n).to(dtype)
    thr = cached_threshold(0.3)
    got = numba_dropout(x, 77, 5, thr, 1 / 0.7)
    want = torch.empty_like(x)
    half = _NUMBA_KIND[dtype]
    if half is None:
        kernels[0](x.numpy(), want.numpy(), 77, 5, 0, thr, 1 / 0.7)
    else:
        bits = (t.view(torch.int16).numpy().view("uint16") for t in (x, want))
        kernels[1](*bits, 77, 5, 0, thr, 1 / 0.7, half)
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
    if dtype in (torch.float32, torch.float64) and n:
        g = torch.tensor(3.1, dtype=dtype)
        filled = F.dropout(g.expand(n), 0.3, seed=77, offset=5)
        assert not any(g.expand(n).stride())
        assert torch.equal(filled, F.dropout(g.expand(n).contiguous(), 0.3, seed=77, offset=5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 2**14])
def test_gaussian_by_address_gives_the_array_kernels_bits(dtype, n):
    """Small Gaussian dropout calls run the kernel by address; forward and backward give the
    array kernel's bits (the noise of the same seed and offset)."""
    from dropkit.rng.kernels import _wait

    _wait()
    torch.manual_seed(n)
    x = torch.randn(n).to(dtype).requires_grad_(True)
    dy = torch.randn(n).to(dtype)
    sigma = (0.3 / 0.7) ** 0.5

    def by_array(t):
        out = torch.empty_like(t)
        if dtype in (torch.float32, torch.float64):
            cpu.gaussian_kernel(t.numpy(), out.numpy(), 11, 3, 0, sigma)
        else:
            bits = (v.view(torch.int16).numpy().view("uint16") for v in (t, out))
            cpu.gaussian_half_kernel(*bits, 11, 3, 0, sigma, dtype == torch.bfloat16)
        return out

    y = F.gaussian_dropout(x, 0.3, seed=11, offset=3)
    y.backward(dy)
    assert torch.equal(y.detach().view(torch.uint8), by_array(x.detach()).view(torch.uint8))
    assert torch.equal(x.grad.view(torch.uint8), by_array(dy).view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (8, 1, 1), (16, 64)])
def test_shared_mask_by_address_gives_the_array_kernels_bits(dtype, shape):
    """Small shared masks (DropPath, LockedDropout, channel dropout) are filled by address;
    the bits are the array kernel's."""
    import numpy as np

    from dropkit.functional.mask import _cpu_scaled_keep, _mask_value
    from dropkit.rng.kernels import _wait
    from dropkit.rng.ops import cached_threshold

    _wait()
    got = _cpu_scaled_keep(shape, 123, 9, 0.25, 1 / 0.75, dtype)
    np_dtype, value = _mask_value(1 / 0.75, dtype)
    want = np.empty(shape, dtype=np_dtype)
    cpu.scaled_keep_kernel(want.reshape(-1), 123, 9, 0, cached_threshold(0.25), value)
    want_t = torch.from_numpy(want)
    want_t = want_t.view(dtype) if np_dtype == np.uint16 else want_t.to(dtype)
    assert got.dtype == dtype
    assert got.shape == shape
    assert torch.equal(got.view(torch.uint8), want_t.view(torch.uint8))
