"""NumPy twins of the numba CPU kernels of :mod:`dropkit.rng.cpu`, for small tensors.

Each function here has the signature and the semantics of the kernel of the same name in
:mod:`dropkit.rng.cpu` and writes the same bits into ``out``: the words are those of
:func:`dropkit.rng.philox.philox4x32` under the counter layout of :mod:`dropkit.rng.philox`
(counter ``(q lo, q hi, stream, 0)`` for ``q = j >> 2``, word ``j & 3``), the decision is the
unsigned compare ``word >= threshold``, and the arithmetic follows the kernels step by step (the
data's dtype, the same roundings, the same expression order, the same half-precision rounding).

They exist so that the first dropout calls of a process need not wait for numba (importing it
and building its CPU target take ~0.5 s): :mod:`dropkit.rng.kernels` answers calls on tensors of
up to 2^16 elements with these while numba loads in a background thread. They are vectorised
(one Philox evaluation per four elements, about 40 NumPy operations per call), some tens of
microseconds at 1024 elements, and import nothing but NumPy. The Gaussian twins add about 60
float64 operations for the Box-Muller normals (0.2 ms at 256 elements, 6 ms at 2^16).
"""

from __future__ import annotations

import numpy as np

from .fdlibm import (
    ANGLE,
    BIT52,
    C1,
    C2,
    C3,
    C4,
    C5,
    C6,
    EXP_ONE,
    K_BIAS,
    LOW30,
    MAGIC,
    MANT_BITS,
    NLG1,
    NLG2,
    NLG3,
    NLG4,
    NLG5,
    NLG6,
    NLG7,
    NLN2_HI,
    NLN2_LO,
    QUARTER,
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    SHIFT52,
    SQRT2_CARRY,
)
from .philox import MASK32, philox4x32

_U32 = np.uint64(32)


def _quiet() -> np.errstate:
    # The kernels compute with IEEE defaults (overflow to inf, NaN from NaN) and report
    # nothing; NumPy would warn, or raise under the caller's np.seterr.
    return np.errstate(all="ignore")


_ONE = np.uint64(1)


def _words(seed, offset, n: int, stream) -> np.ndarray:
    """uint32 words of stream positions ``offset .. offset + n - 1``: one Philox call per four
    positions (calls ``offset >> 2 ..``), flattened, and the leading ``offset & 3`` words cut."""
    offset = int(offset)
    first = offset >> 2
    calls = ((offset + n + 3) >> 2) - first
    q = np.uint64(first) + np.arange(calls, dtype=np.uint64)
    counter = np.empty((calls, 4), dtype=np.uint64)
    counter[:, 0] = q & MASK32
    counter[:, 1] = q >> _U32
    counter[:, 2] = np.uint64(int(stream))  # masked to 32 bits by philox4x32, as by the kernel
    counter[:, 3] = 0
    seed = int(seed)
    words = philox4x32(counter, (seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)).reshape(-1)
    lane = offset & 3
    return words[lane : lane + n]


def _keep(seed, offset, n: int, stream, threshold) -> np.ndarray:
    return _words(seed, offset, n, stream) >= np.uint32(threshold)


def masked_scale_kernel(x, out, seed, offset, stream, threshold, scale):
    """``out[i] = x[i] * scale`` where position ``offset + i`` is kept, else +0.

    ``x`` and ``out`` flat float32/float64 arrays (``out`` may be ``x``); the product is taken in
    ``x``'s dtype with ``scale`` rounded to it first, as the numba kernel does.
    """
    n = x.size
    if n == 0:
        return
    dt = x.dtype.type
    keep = _keep(seed, offset, n, stream, threshold)
    with _quiet():
        out[...] = np.where(keep, x * dt(scale), dt(0))


def _f16_to_f32_bits(h: np.ndarray) -> np.ndarray:
    """IEEE binary16 bits (uint16) -> float32 bits (uint32), by the kernel's steps: exponent and
    mantissa shifted into place and scaled by 2^112 (exact, right for subnormals), inf/NaN mended
    with their payload, then the sign."""
    h = h.astype(np.uint32)
    bits = (h & np.uint32(0x7FFF)) << np.uint32(13)
    with _quiet():
        bits = (bits.view(np.float32) * np.float32(2.0**112)).view(np.uint32)
    special = (h & np.uint32(0x7C00)) == np.uint32(0x7C00)
    inf_nan = np.uint32(0x7F800000) | ((h & np.uint32(0x3FF)) << np.uint32(13))
    bits = np.where(special, inf_nan, bits)
    return bits | ((h & np.uint32(0x8000)) << np.uint32(16))


def _bf16_bits(u: np.ndarray) -> np.ndarray:
    """float32 bits (uint64 holding 32 bits) -> bfloat16 bits, round to nearest even; every NaN
    becomes the positive quiet NaN 0x7FC0 (the kernel's ``_bf16_bits``)."""
    r = (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & _ONE)) >> np.uint64(16)
    r = np.where((u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000), np.uint64(0x7FC0), r)
    return r.astype(np.uint16)


def _f16_bits(u: np.ndarray) -> np.ndarray:
    """float32 bits (uint64 holding 32 bits) -> IEEE binary16 bits, round to nearest even
    (the kernel's ``_f16_bits``): normal range by rebiasing the exponent and rounding the 13
    dropped bits; below 2^-14 the 24-bit significand shifted right by ``126 - exponent``
    (capped at 25) with ties to even; infinity from 65520 up; NaN as 0x7E00; sign kept."""
    sign = (u >> np.uint64(16)) & np.uint64(0x8000)
    a = u & np.uint64(0x7FFFFFFF)
    # Wraps for small a; those lanes take the subnormal branch below, as in the kernel.
    r = (a - np.uint64(112 << 23) + np.uint64(0xFFF) + ((a >> np.uint64(13)) & _ONE)) >> (
        np.uint64(13)
    )
    sub_lane = a < np.uint64(0x38800000)
    # Exponents 0..112 give shifts 14..126, capped at 25; other lanes get a harmless shift
    # (NumPy, unlike LLVM, defines shifts past 63, but these lanes are discarded anyway).
    e = np.minimum(a >> np.uint64(23), np.uint64(112))
    sh = np.minimum(np.uint64(126) - e, np.uint64(25))
    m = (a & np.uint64(0x7FFFFF)) | np.uint64(0x800000)
    q = m >> sh
    rem = m & ((_ONE << sh) - _ONE)
    half = _ONE << (sh - _ONE)
    up = (rem > half) | ((rem == half) & ((q & _ONE) == _ONE))
    sub = q + up.astype(np.uint64)
    r = np.where(sub_lane, sub, r)
    r = np.where(a >= np.uint64(0x477FF000), np.uint64(0x7C00), r)
    r = np.where(a > np.uint64(0x7F800000), np.uint64(0x7E00), r)
    return (sign | r).astype(np.uint16)


def masked_scale_half_kernel(x, out, seed, offset, stream, threshold, scale, is_bf16):
    """:func:`masked_scale_kernel` for bfloat16 (``is_bf16``) or float16 data given as flat
    uint16 arrays of their bits: widened to float32, ``x * float32(scale)`` in float32 where
    kept (else +0), rounded once to the half type with round-to-nearest-even."""
    n = x.size
    if n == 0:
        return
    bits = x.astype(np.uint32) << np.uint32(16) if is_bf16 else _f16_to_f32_bits(x)
    keep = _keep(seed, offset, n, stream, threshold)
    with _quiet():
        vals = np.where(keep, bits.view(np.float32) * np.float32(scale), np.float32(0.0))
    wide = vals.view(np.uint32).astype(np.uint64)
    out[...] = _bf16_bits(wide) if is_bf16 else _f16_bits(wide)


def alpha_affine_kernel(x, out, seed, offset, stream, threshold, fill, a, b):
    """``out[i] = (x[i] if position offset + i is kept else fill) * a + b`` (flat float32 or
    float64 arrays; ``fill``, ``a``, ``b`` rounded to the data's dtype; the product and the sum
    each rounded to it, as torch's ``where(...) * a + b``)."""
    n = x.size
    if n == 0:
        return
    dt = x.dtype.type
    keep = _keep(seed, offset, n, stream, threshold)
    with _quiet():
        prod = np.where(keep, x, dt(fill)) * dt(a)
        out[...] = prod + dt(b)


def alpha_affine_half_kernel(x, out, seed, offset, stream, threshold, fill, a, b, is_bf16):
    """:func:`alpha_affine_kernel` on bfloat16 (``is_bf16``) or float16 bits (flat uint16
    arrays; ``fill`` as the type's bits, ``b`` a value of the type): the product in float32
    rounded to the type, then the sum rounded again."""
    n = x.size
    if n == 0:
        return
    keep = _keep(seed, offset, n, stream, threshold)
    half = np.where(keep, x, np.uint16(fill))

    def widen(h):
        return (h.astype(np.uint32) << np.uint32(16) if is_bf16 else _f16_to_f32_bits(h)).view(
            np.float32
        )

    def narrow(v):
        wide = v.view(np.uint32).astype(np.uint64)
        return _bf16_bits(wide) if is_bf16 else _f16_bits(wide)

    with _quiet():
        half = narrow(widen(half) * np.float32(a))
        out[...] = narrow(widen(half) + np.float32(b))


def scaled_keep_kernel(out, seed, offset, stream, threshold, value):
    """``out[i] = value`` where position ``offset + i`` is kept, else 0 (a flat array of any
    numeric dtype; ``value`` converted to that dtype, e.g. bfloat16 bits in a uint16 array)."""
    n = out.size
    if n == 0:
        return
    keep = _keep(seed, offset, n, stream, threshold)
    dt = out.dtype.type
    with _quiet():
        out[...] = np.where(keep, dt(value), dt(0))


def words_kernel(out, seed, offset, stream):
    """``out[i]`` (uint32) = the Philox word of stream position ``offset + i``."""
    n = out.size
    if n == 0:
        return
    out[...] = _words(seed, offset, n, stream)


def _add(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``u + v``, and where both are NaN, ``u``'s NaN (quieted), as the compiled kernel's scalar
    loop gives. IEEE 754 leaves that choice open: NumPy's own add picks either operand depending
    on the loop that runs it, and so does the numba kernel (its vectorised loop commutes the
    add), so only there can the twin's NaN differ from the kernel's (a NaN either way)."""
    total = u + v
    total = np.where(np.isnan(v), v + v.dtype.type(0), total)
    return np.where(np.isnan(u), u + u.dtype.type(0), total)


def bias_dropout_add_kernel(x, bias, residual, out, seed, offset, stream, threshold, scale):
    """``out[i] = residual[i] + (x[i] + bias[i % H]) * scale`` where position ``offset + i`` is
    kept, else ``residual[i]`` (flat arrays; ``H = bias.size``; the kernel's expression order,
    ``scale`` rounded to ``x``'s dtype). Where an add meets two NaNs the result is a NaN whose
    sign and payload may differ from the numba kernel's (see :func:`_add`)."""
    n = x.size
    if n == 0:
        return
    h = bias.size
    keep = _keep(seed, offset, n, stream, threshold)
    b = bias[np.arange(n) % h] if n != h else bias
    with _quiet():
        s = x.dtype.type(scale)
        out[...] = np.where(keep, _add(residual, _add(x, b) * s), residual)


# ------------------------------------------------------------------ Gaussian noise
# The numba kernels' constants and steps (dropkit.rng.cpu, the comment above _normal_pairs):
# fdlibm's logarithm, sine and cosine in +, -, *, / and sqrt, which NumPy rounds as the
# compiled loops do, so the normals agree bit for bit (the constants: dropkit.rng.fdlibm).


def _normals(seed, offset, n: int, stream) -> np.ndarray:
    """float64 standard normals of stream positions ``offset .. offset + n - 1``: the word pairs
    ``(w_2k, w_2k+1)`` through the numba kernel's Box-Muller steps."""
    offset = int(offset)
    start = offset - (offset & 1)  # pairs begin at even positions
    pairs = (offset + n + 1) // 2 - start // 2
    words = _words(seed, start, 2 * pairs, stream)
    ev, od = words[0::2], words[1::2]
    # ln u1: v = w + 1 = 2^e m, m in [sqrt(2)/2, sqrt(2)), k = e - 32.
    hx = (ev.astype(np.uint64) + _ONE).astype(np.float64).view(np.uint64)
    mant = hx & MANT_BITS
    up = (mant + SQRT2_CARRY) & BIT52
    f = (mant | (up ^ EXP_ONE)).view(np.float64) - 1.0
    k = (((hx >> SHIFT52) + (up >> SHIFT52)) | MAGIC).view(np.float64) - K_BIAS
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (NLG2 + w * (NLG4 + w * NLG6))
    t2 = z * (NLG1 + w * (NLG3 + w * (NLG5 + w * NLG7)))
    radius = np.sqrt(((s * (t2 + t1) + k * NLN2_LO) + s * -4.0) + k * NLN2_HI)
    # The angle: quadrant q and theta in [-pi/4, pi/4] from the integer word.
    turn = od + QUARTER  # uint32: wraps mod 2^32, as the kernel's
    q = (turn >> np.uint32(30)).astype(np.float64)
    x = ANGLE * ((turn & LOW30).astype(np.int64) - int(QUARTER)).astype(np.float64)
    z = x * x
    w = z * z
    r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6)
    sn = x + z * x * (S1 + z * r)
    r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6))
    hz = 0.5 * z
    c = 1.0 - hz
    cs = c + (((1.0 - c) - hz) + z * r)
    swap = (q == 1.0) | (q == 3.0)
    cm = np.where(swap, sn, cs)
    sm = np.where(swap, cs, sn)
    out = np.empty(2 * pairs)
    out[0::2] = radius * np.where((q == 1.0) | (q == 2.0), -cm, cm)
    out[1::2] = radius * np.where(q >= 2.0, -sm, sm)
    return out[offset - start : offset - start + n]


def normal_kernel(out, seed, offset, stream):
    """``out[i]`` (float64) = the standard normal of stream position ``offset + i`` (Box-Muller
    on the word pairs, the numba kernel's float64 steps)."""
    n = out.size
    if n == 0:
        return
    with _quiet():
        out[...] = _normals(seed, offset, n, stream)


def gaussian_kernel(x, out, seed, offset, stream, sigma):
    """``out[i] = x[i] * dtype(1 + sigma * z_i)`` (flat float32/float64 arrays): the noise in
    float64, rounded once to the data's dtype, the product in that dtype."""
    n = out.size
    if n == 0:
        return
    with _quiet():
        noise = (1.0 + sigma * _normals(seed, offset, n, stream)).astype(x.dtype)
        out[...] = x * noise


def gaussian_half_kernel(x, out, seed, offset, stream, sigma, is_bf16):
    """:func:`gaussian_kernel` for bfloat16 (``is_bf16``) or float16 bits (flat uint16 arrays):
    the noise rounded float64 -> float32 -> half, the product of the two values in float32
    rounded once to the half type (round to nearest even)."""
    n = out.size
    if n == 0:
        return

    def value(h: np.ndarray) -> np.ndarray:
        bits = h.astype(np.uint32) << np.uint32(16) if is_bf16 else _f16_to_f32_bits(h)
        return bits.view(np.float32)

    def half(v: np.ndarray) -> np.ndarray:
        wide = v.view(np.uint32).astype(np.uint64)
        return _bf16_bits(wide) if is_bf16 else _f16_bits(wide)

    with _quiet():
        noise = (1.0 + sigma * _normals(seed, offset, n, stream)).astype(np.float32)
        out[...] = half(value(x) * value(half(noise)))
