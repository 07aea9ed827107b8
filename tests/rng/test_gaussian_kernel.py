"""The fused Gaussian-dropout kernel against the float64 formula it replaces.

``dropkit.rng.cpu.gaussian_kernel`` (and its half and raw-normal variants) computes
``x * dtype(1 + sigma * z)`` with ``z`` the Box-Muller normal of each stream position, evaluated
in float64 with fdlibm's logarithm, sine and cosine written in IEEE operations. Checked here:

* rounded to float32, bfloat16 and float16, its noise is the noise of the torch float64 formula
  that ``standard_normal`` ran before (words -> ``torch.log``/``cos``/``sin``), bit for bit, on
  2^20 positions per dtype and rate; in float64 the two agree to 1e-14 and the kernel is the
  closer of the two to the exact value (long double), within 4 ulps;
* ``gaussian_dropout`` equals ``x * gaussian_noise(...)`` bit for bit for every dtype, odd
  offsets and lengths, strided inputs (noise by logical index, strides kept), on every route
  (fast path, explicit seed, in place, ``torch.func``, ``torch.compile``'s custom op);
* backward is ``noise * grad`` with the noise regenerated (only the seed saved), double backward
  records the op again, and ``gradcheck``/``gradgradcheck`` pass in float64;
* the serial and parallel kernels agree on both sides of the switch.

The NumPy twins are checked against the numba kernels in ``test_cpu_numpy.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

import dropkit.functional as F
from dropkit.functional import gaussian
from dropkit.rng import cpu, philox

pytestmark = pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba")

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16,
        torch.float16: torch.int16}  # fmt: skip
N = 1 << 20
SEED = 0x1E3779B97F4A7C15


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(BITS[t.dtype])


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


@functools.lru_cache(maxsize=4)
def torch_formula(seed: int, offset: int, n: int) -> torch.Tensor:
    """The float64 normals as ``standard_normal`` computed them with torch ops before the kernel:
    the NumPy reference's words, ``sqrt(-2 log((w + 1) / 2^32))`` times ``cos``/``sin`` of
    ``(2 pi / 2^32) w``."""
    start = offset - offset % 2
    count = (offset + n + 1) // 2 * 2 - start
    words = philox.random_words(seed, start, count).astype(np.int64)
    w = torch.from_numpy(words).to(torch.float64)
    radius = torch.sqrt(-2.0 * torch.log((w[0::2] + 1.0) / 2.0**32))
    angle = (2.0 * math.pi / 2.0**32) * w[1::2]
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).view(-1)
    return z[offset - start : offset - start + n]


def sigma(p: float) -> float:
    return math.sqrt(p / (1.0 - p))


# ------------------------------------------------------------------ the noise's values


@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rounded_noise_equals_the_torch_formula(dtype, p, offset):
    """``gaussian_dropout(ones)`` (the noise itself: 1 * noise is exact) equals the torch
    float64 formula's ``(1 + sigma z).to(dtype)`` at every one of 2^20 positions."""
    expected = (1.0 + sigma(p) * torch_formula(SEED, offset, N)).to(dtype)
    got = F.gaussian_dropout(torch.ones(N, dtype=dtype), p, seed=SEED, offset=offset)
    assert _same_bits(got, expected)
    assert _same_bits(F.gaussian_noise((N,), p, dtype=dtype, seed=SEED, offset=offset), expected)


@pytest.mark.parametrize("offset", [0, 1])
def test_float64_normals_agree_with_torch_and_numpy_to_1e_14(offset):
    z = F.standard_normal((N,), seed=SEED, offset=offset)
    assert z.dtype == torch.float64
    assert float((z - torch_formula(SEED, offset, N)).abs().max()) < 1e-14
    reference = torch.from_numpy(philox.normal(SEED, offset, (N,)))
    assert float((z - reference).abs().max()) < 1e-14


@pytest.mark.skipif(np.finfo(np.longdouble).eps > 1e-18, reason="needs an extended long double")
def test_float64_normals_are_within_4_ulps_of_the_exact_value():
    """Against Box-Muller in 80-bit long double (error ~1e-19), the kernel's normals are within
    4 ulps where |z| > 0.1 and 1.5e-15 everywhere; the torch formula, which rounds the angle
    2 pi u2 before its cosine, is farther (checked too, so the bound is not vacuous)."""
    n = 1 << 18
    words = philox.random_words(SEED, 0, 2 * n).astype(np.longdouble)
    pi = np.longdouble("3.14159265358979323846264338327950288")
    radius = np.sqrt(-2 * np.log((words[0::2] + 1) / np.longdouble(2) ** 32))
    angle = 2 * pi * words[1::2] / np.longdouble(2) ** 32
    exact = np.empty(2 * n, np.longdouble)
    exact[0::2], exact[1::2] = radius * np.cos(angle), radius * np.sin(angle)
    ulp = np.spacing(np.abs(exact).astype(np.float64)).astype(np.longdouble)
    big = np.abs(exact) > 0.1

    def errors(z: np.ndarray) -> tuple[float, float]:
        err = np.abs(z.astype(np.longdouble) - exact)
        return float(err.max()), float((err[big] / ulp[big]).max())

    kernel_abs, kernel_ulps = errors(F.standard_normal((2 * n,), seed=SEED).numpy())
    torch_abs, torch_ulps = errors(torch_formula(SEED, 0, 2 * n).numpy())
    assert kernel_abs < 1.5e-15
    assert kernel_ulps <= 4.0
    assert torch_abs > kernel_abs
    assert torch_ulps > kernel_ulps


def test_noise_has_the_moments_of_the_rate():
    """Mean 1 and variance p / (1 - p) within 5 standard errors (2^20 positions), and the
    normals' fourth moment 3 (a normal's) within 5 standard errors."""
    z = F.standard_normal((N,), seed=7).double()
    assert abs(float(z.mean())) < 5 / math.sqrt(N)
    assert abs(float(z.var()) - 1.0) < 5 * math.sqrt(2 / N)
    assert abs(float((z**4).mean()) - 3.0) < 5 * math.sqrt(96 / N)
    noise = F.gaussian_noise((N,), 0.3, dtype=torch.float64, seed=8)
    var = 0.3 / 0.7
    assert abs(float(noise.mean()) - 1.0) < 5 * math.sqrt(var / N)
    assert abs(float(noise.var()) - var) < 5 * var * math.sqrt(2 / N)


# ------------------------------------------------------------------ routes and layouts

SHAPES = [(1,), (2,), (7,), (3, 5), (4097,), (2, 4099)]


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 2**33 + 5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_x_times_the_noise_on_every_route(dtype, offset):
    p = 0.3
    for shape in SHAPES:
        x = torch.randn(shape, dtype=torch.float64).to(dtype)
        noise = F.gaussian_noise(shape, p, dtype=dtype, seed=SEED, offset=offset)
        expected = x * noise
        assert _same_bits(F.gaussian_dropout(x, p, seed=SEED, offset=offset), expected)
        seed_t = torch.tensor(SEED)
        general = gaussian._GaussianDropout.apply(x, seed_t, offset, p, "numba")
        assert _same_bits(general, expected)
        compiled_op = gaussian._gaussian_op(x, seed_t, offset, p, "numba")
        assert _same_bits(compiled_op, expected)
        inplace = x.clone()
        F.gaussian_dropout(inplace, p, inplace=True, seed=SEED, offset=offset)
        assert _same_bits(inplace, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_draws_its_seed_as_the_general_path(dtype):
    x = torch.randn(5, 9).to(dtype)
    torch.manual_seed(13)
    fast = F.gaussian_dropout(x, 0.3)
    torch.manual_seed(13)
    noise = F.gaussian_noise(x.shape, 0.3, dtype=dtype)
    assert _same_bits(fast, x * noise)


def test_windows_of_the_stream_are_slices_of_the_whole():
    """Positions pair by their absolute parity: any (offset, length) window, odd ones included,
    is the matching slice of one long draw."""
    whole = F.standard_normal((64,), seed=3)
    for offset in range(9):
        for n in (1, 2, 3, 8, 17):
            window = F.standard_normal((n,), seed=3, offset=offset)
            assert _same_bits(window, whole[offset : offset + n])
    x = torch.randn(64)
    full = F.gaussian_dropout(x, 0.4, seed=3)
    for offset in (1, 5, 31):
        part = F.gaussian_dropout(x[offset:], 0.4, seed=3, offset=offset)
        assert _same_bits(part, full[offset:])


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_inputs_take_the_noise_of_their_logical_index(dtype):
    """channels_last and transposed inputs (dense) keep their strides; a sliced input (not
    dense) gives a contiguous output; the values are those of the contiguous copy."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64).to(dtype)
    strided = x.reshape(6, 35)[:, ::2]
    assert torch.empty_like(strided).stride() == strided.contiguous().stride()  # not dense
    layouts = [
        x.to(memory_format=torch.channels_last),
        x.reshape(6, 35).t(),
        strided,
        x.permute(3, 1, 0, 2),
    ]
    for t in layouts:
        y = F.gaussian_dropout(t, 0.3, seed=9, offset=1)
        assert _same_bits(y, F.gaussian_dropout(t.contiguous(), 0.3, seed=9, offset=1))
        assert y.stride() == torch.empty_like(t).stride()  # preserve_format: t's if dense
        torch.manual_seed(4)
        fast = F.gaussian_dropout(t, 0.3)
        torch.manual_seed(4)
        assert _same_bits(fast, t * F.gaussian_noise(t.shape, 0.3, dtype=dtype))


def test_empty_and_zero_dim_inputs():
    assert F.gaussian_dropout(torch.empty(0, 3), 0.5, seed=1).shape == (0, 3)
    scalar = torch.tensor(2.0)
    y = F.gaussian_dropout(scalar, 0.5, seed=1, offset=5)
    assert y.shape == ()
    assert torch.equal(y, scalar * F.gaussian_noise((), 0.5, seed=1, offset=5))


# ------------------------------------------------------------------ autograd


@pytest.mark.parametrize("fast", [True, False], ids=["seed-drawn", "seed-given"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_is_the_regenerated_noise_times_the_gradient(dtype, fast):
    x = torch.randn(33, 31, dtype=torch.float64).to(dtype).requires_grad_(True)
    dy = torch.randn(33, 31, dtype=torch.float64).to(dtype)
    torch.manual_seed(21)
    y = F.gaussian_dropout(x, 0.3) if fast else F.gaussian_dropout(x, 0.3, seed=21, offset=3)
    (dx,) = torch.autograd.grad(y, x, dy)
    torch.manual_seed(21)
    kwargs = {} if fast else {"seed": 21, "offset": 3}
    noise = F.gaussian_noise(x.shape, 0.3, dtype=dtype, **kwargs)
    assert _same_bits(y.detach(), x.detach() * noise)
    assert _same_bits(dx, dy * noise)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_only_the_seed_is_saved(dtype):
    x = torch.randn(4096).to(dtype).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        F.gaussian_dropout(x, 0.3)
    assert saved == [8]


def test_double_backward_records_the_op_again():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    y = F.gaussian_dropout(x, 0.4, seed=5, offset=1)
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    (ddy,) = torch.autograd.grad(dx.sum(), dy)
    assert torch.equal(ddy, F.gaussian_noise(x.shape, 0.4, dtype=torch.float64, seed=5, offset=1))


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)

    def op(t):
        return F.gaussian_dropout(t, 0.3, seed=17, offset=3)

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))


# torch.func.jvp and dual tensors import torch's jvp decompositions, which call torch.jit.script.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_forward_ad_and_torch_func_see_the_same_noise():
    p, seed, offset = 0.3, 31, 1
    x, t = torch.randn(4, 6), torch.randn(4, 6)
    noise = F.gaussian_noise(x.shape, p, dtype=x.dtype, seed=seed, offset=offset)

    def op(v):
        return F.gaussian_dropout(v, p, seed=seed, offset=offset)

    with fwAD.dual_level():
        primal, tangent = fwAD.unpack_dual(op(fwAD.make_dual(x, t)))
    assert torch.equal(primal, x * noise)
    assert torch.equal(tangent, t * noise)
    assert torch.equal(torch.func.grad(lambda v: op(v).sum())(x), noise)
    _, jvp_out = torch.func.jvp(op, (x,), (t,))
    assert torch.equal(jvp_out, t * noise)
    rows = torch.func.vmap(op, randomness="same")(x.unsqueeze(1))
    assert torch.equal(rows, x.unsqueeze(1) * noise[0])


def test_module_equals_the_functional():
    from dropkit.nn import GaussianDropout

    layer = GaussianDropout(0.2)
    x = torch.randn(8, 16)
    torch.manual_seed(2)
    y = layer(x)
    torch.manual_seed(2)
    assert torch.equal(y, F.gaussian_dropout(x, 0.2))
    assert layer.eval()(x) is x


# ------------------------------------------------------------------ kernel twins


@pytest.mark.parametrize("offset", [0, 3])
def test_serial_and_parallel_kernels_agree(offset):
    n = 3 * cpu.GAUSSIAN_SERIAL_MAX + 5
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    cpu._gaussian_serial(x, a, 11, offset, 0, 0.5, False)
    cpu._gaussian_parallel(x, b, 11, offset, 0, 0.5, False)
    assert a.tobytes() == b.tobytes()
    h = np.random.default_rng(1).integers(0, 2**16, n, dtype=np.uint16)
    for is_bf16 in (True, False):
        c, d = np.empty_like(h), np.empty_like(h)
        cpu._gaussian_half_serial(h, c, 11, offset, 0, 0.5, is_bf16)
        cpu._gaussian_half_parallel(h, d, 11, offset, 0, 0.5, is_bf16)
        assert np.array_equal(c, d)
    z = np.empty(n)
    cpu.normal_kernel(z, 11, offset, 0)
    assert np.array_equal(z, F.standard_normal((n,), seed=11, offset=offset).numpy())
