"""CPU kernels (numba): Philox-4x32-10 masks fused with the masked rescale, and Gaussian noise.

The kernels implement exactly the specification in :mod:`dropkit.rng.philox` (counter
``(q lo, q hi, stream, 0)`` for ``q = j >> 2``, word ``j & 3``, unsigned compare against the
threshold), so their masks are bit-identical to the NumPy reference. Nothing but the output is
written (no mask is stored).

Layout, chosen so that LLVM vectorises both halves (AVX2/AVX-512 ``vpmuludq`` does eight or
sixteen 32x32 -> 64-bit Philox products at once):

* the work is cut into blocks of :data:`BLOCK` Philox calls (``4 * BLOCK`` elements), spread
  over threads with ``prange``;
* per block, one straight-line loop computes the four words of every call into a small local
  buffer (it stays in L1), with the ten rounds unrolled and the round keys hoisted;
* a second loop applies the decision to contiguous views of the input and output. Indexing
  views from zero matters: a loop over signed global indices keeps numba's negative-index
  check, which stops vectorisation and made the element loop 6x slower.

numba promotes ``uint32 * uint32`` to 64 bits, so all 32-bit arithmetic is done in uint64 and
masked back to 32 bits after every multiply and add.

Each kernel body is compiled twice, as a parallel and a serial twin (the serial one for small
tensors, for forked children of a process that started numba's GNU-OpenMP pool, and for threads
that find another parallel kernel running); :mod:`dropkit.rng.threads` picks one per call and
says why. Both twins release the GIL and are cached on disk (:mod:`dropkit.rng.jitcache` keeps a
read-only install importable).

The Gaussian kernels (:func:`gaussian_kernel`, :func:`gaussian_half_kernel`,
:func:`normal_kernel`) turn pairs of words into Box-Muller normals in float64 with the fdlibm
algorithms written in IEEE operations (see the comment above ``_normal_pairs``).
"""

from __future__ import annotations

import types

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

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    from numba.core import types as _types

    from . import threads as _threads
    from .intrinsics import address_of, bitcast
    from .jitcache import cached_njit
    from .threads import launch

#: Philox calls per block: 4096 elements, a 16 KiB word buffer.
BLOCK = 1024

if AVAILABLE:
    _M0 = np.uint64(0xD2511F53)
    _M1 = np.uint64(0xCD9E8D57)
    _W0 = np.uint64(0x9E3779B9)
    _W1 = np.uint64(0xBB67AE85)
    _MASK = np.uint64(0xFFFFFFFF)
    _S32 = np.uint64(32)

    @numba.njit(inline="always")
    def _round(c0, c1, c2, c3, k0, k1):
        p0 = _M0 * c0
        p1 = _M1 * c2
        return (p1 >> _S32) ^ c1 ^ k0, p1 & _MASK, (p0 >> _S32) ^ c3 ^ k1, p0 & _MASK

    @numba.njit(inline="always")
    def _round_keys(k0, k1):
        """The ten round keys (k0 + r W0, k1 + r W1) mod 2^32, r = 0..9, as one tuple
        ``(a0, b0, a1, b1, ...)``, hoisted out of the loops over calls."""
        a1, b1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
        a2, b2 = (a1 + _W0) & _MASK, (b1 + _W1) & _MASK
        a3, b3 = (a2 + _W0) & _MASK, (b2 + _W1) & _MASK
        a4, b4 = (a3 + _W0) & _MASK, (b3 + _W1) & _MASK
        a5, b5 = (a4 + _W0) & _MASK, (b4 + _W1) & _MASK
        a6, b6 = (a5 + _W0) & _MASK, (b5 + _W1) & _MASK
        a7, b7 = (a6 + _W0) & _MASK, (b6 + _W1) & _MASK
        a8, b8 = (a7 + _W0) & _MASK, (b7 + _W1) & _MASK
        a9, b9 = (a8 + _W0) & _MASK, (b8 + _W1) & _MASK
        return (k0, k1, a1, b1, a2, b2, a3, b3, a4, b4, a5, b5, a6, b6, a7, b7, a8, b8, a9, b9)

    @numba.njit(inline="always")
    def _philox10(q, stream, r):
        """The four words of Philox-4x32-10 call ``q`` (counter ``(q lo, q hi, stream, 0)``)
        with the round keys ``r`` of :func:`_round_keys`."""
        c = _round(q & _MASK, q >> _S32, stream, np.uint64(0), r[0], r[1])
        c = _round(c[0], c[1], c[2], c[3], r[2], r[3])
        c = _round(c[0], c[1], c[2], c[3], r[4], r[5])
        c = _round(c[0], c[1], c[2], c[3], r[6], r[7])
        c = _round(c[0], c[1], c[2], c[3], r[8], r[9])
        c = _round(c[0], c[1], c[2], c[3], r[10], r[11])
        c = _round(c[0], c[1], c[2], c[3], r[12], r[13])
        c = _round(c[0], c[1], c[2], c[3], r[14], r[15])
        c = _round(c[0], c[1], c[2], c[3], r[16], r[17])
        return _round(c[0], c[1], c[2], c[3], r[18], r[19])

    @numba.njit(inline="always")
    def _philox_block(q0, m, stream, k0, k1, words):
        """Words of Philox calls ``q0 .. q0 + m - 1`` into ``words[0 : 4 m]`` (uint32)."""
        # Calls t and t + h run side by side: two independent chains of multiplies per
        # iteration keep more of the core busy (about 20% faster than one chain); an odd m
        # leaves one call for the end. The loop over calls is the innermost and vectorises.
        r = _round_keys(k0, k1)
        h = m >> 1
        for t in range(h):
            q = q0 + np.uint64(t)
            c = _philox10(q, stream, r)
            d = _philox10(q + np.uint64(h), stream, r)
            u, v = 4 * t, 4 * (t + h)
            words[u], words[u + 1] = np.uint32(c[0]), np.uint32(c[1])
            words[u + 2], words[u + 3] = np.uint32(c[2]), np.uint32(c[3])
            words[v], words[v + 1] = np.uint32(d[0]), np.uint32(d[1])
            words[v + 2], words[v + 3] = np.uint32(d[2]), np.uint32(d[3])
        if m & 1:
            c = _philox10(q0 + np.uint64(m - 1), stream, r)
            u = 4 * (m - 1)
            words[u], words[u + 1] = np.uint32(c[0]), np.uint32(c[1])
            words[u + 2], words[u + 3] = np.uint32(c[2]), np.uint32(c[3])

    @numba.njit(inline="always")
    def _setup(seed, offset, n):
        """Key words, the first Philox call and the number of blocks covering positions
        ``offset .. offset + n - 1``."""
        first = np.uint64(offset) >> np.uint64(2)
        calls = ((np.uint64(offset) + np.uint64(n) + np.uint64(3)) >> np.uint64(2)) - first
        blocks = np.int64((calls + np.uint64(BLOCK - 1)) // np.uint64(BLOCK))
        return np.uint64(seed) & _MASK, np.uint64(seed) >> _S32, first, calls, blocks

    @numba.njit(inline="always")
    def _block(b, first, calls, offset, n, stream, k0, k1, words):
        """Fill ``words`` for block ``b``; return ``(lo, hi, w)``: elements ``lo .. hi - 1``
        of the tensor take words ``w .. w + hi - lo - 1`` of the buffer."""
        q0 = first + np.uint64(b) * np.uint64(BLOCK)
        m = np.int64(min(np.uint64(BLOCK), calls - np.uint64(b) * np.uint64(BLOCK)))
        _philox_block(q0, m, np.uint64(stream), k0, k1, words)
        base = np.int64(q0 << np.uint64(2)) - np.int64(offset)  # tensor index of words[0]
        lo = max(base, 0)
        hi = min(base + 4 * m, n)
        return lo, hi, lo - base

    def _twins(body, **options):
        """A parallel and a serial dispatcher compiled from one Python body.

        With ``parallel=False`` numba runs ``prange`` as ``range``. The serial twin is a copy
        of the function under another qualified name because numba names cache files after
        the qualified name and does not key its index on ``parallel``: two dispatchers of one
        function would overwrite each other's cached code. ``options`` go to both (numba's
        ``error_model="numpy"`` for a body that divides: the default Python model tests every
        divisor for zero, a branch that stops the loop from vectorising).
        """
        serial = types.FunctionType(
            body.__code__, body.__globals__, body.__name__ + "_serial", body.__defaults__
        )
        serial.__qualname__ = body.__qualname__ + "_serial"
        serial.__doc__ = body.__doc__
        return (
            cached_njit(parallel=True, nogil=True, **options)(body),
            cached_njit(nogil=True, **options)(serial),
        )

    def _masked_scale(x, out, seed, offset, stream, threshold, scale):
        n = x.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        zero = x.dtype.type(0)
        s = x.dtype.type(scale)
        for b in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(b, first, calls, offset, n, stream, k0, k1, words)
            xv, ov, wv = x[lo:hi], out[lo:hi], words[w : w + hi - lo]
            for k in range(hi - lo):
                ov[k] = xv[k] * s if wv[k] >= thr else zero

    def _words(out, seed, offset, stream):
        n = out.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        for b in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(b, first, calls, offset, n, stream, k0, k1, words)
            out[lo:hi] = words[w : w + hi - lo]

    def _bias_dropout_add(x, bias, residual, out, seed, offset, stream, threshold, scale):
        n = x.size
        h = bias.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        s = x.dtype.type(scale)
        for b in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(b, first, calls, offset, n, stream, k0, k1, words)
            # Walk the block one bias row segment at a time, so that the inner loop reads
            # bias contiguously (a per-element modulo or wrap stops vectorisation).
            i = lo
            while i < hi:
                col = i % h
                end = min(hi, i + (h - col))
                xv, rv, ov = x[i:end], residual[i:end], out[i:end]
                bv, wv = bias[col : col + end - i], words[w + i - lo : w + end - lo]
                for k in range(end - i):
                    if wv[k] >= thr:
                        ov[k] = rv[k] + (xv[k] + bv[k]) * s
                    else:
                        ov[k] = rv[k]
                i = end

    # ------------------------------------------------------------------ half precision
    # numba has no float16/bfloat16 on the CPU, so half tensors travel as their uint16 bits.
    # Per block: widen to float32 bits in a local buffer, scale in float32 (the value the GPU
    # kernel and torch's own ``x.float() * scale`` compute), round once to the half type with
    # round-to-nearest-even (torch's rounding), all in L1; no full-size fp32 copy exists.

    _TWO112 = np.float32(2.0**112)

    @numba.njit(inline="always")
    def _bf16_bits(u):
        """Round float32 bits ``u`` (uint64 holding 32 bits) to bfloat16 bits (RNE; NaN kept
        NaN)."""
        if (u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000):
            return np.uint16(0x7FC0)
        return np.uint16(
            (u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> np.uint64(16)
        )

    @numba.njit(inline="always")
    def _f16_bits(u):
        """Round float32 bits ``u`` (uint64 holding 32 bits) to IEEE binary16 bits (RNE).

        Every case is computed and the right one selected (no early return), so the loop
        that calls this vectorises.
        """
        one = np.uint64(1)
        sign = (u >> np.uint64(16)) & np.uint64(0x8000)
        a = u & np.uint64(0x7FFFFFFF)
        # Normal binary16: rebias the exponent by 127 - 15 and round the 13 dropped bits.
        r = (a - np.uint64(112 << 23) + np.uint64(0xFFF) + ((a >> np.uint64(13)) & one)) >> (
            np.uint64(13)
        )
        # Below 2^-14: the value in units of 2^-24 is the 24-bit significand shifted right by
        # 126 - exponent (capped at 25, where everything rounds to 0), rounded half to even.
        sh = min(np.uint64(126) - (a >> np.uint64(23)), np.uint64(25))  # wraps high: capped
        m = (a & np.uint64(0x7FFFFF)) | np.uint64(0x800000)
        q = m >> sh
        rem = m & ((one << sh) - one)
        half = one << (sh - one)
        sub = q + np.uint64((rem > half) or (rem == half and (q & one) == one))
        if a < np.uint64(0x38800000):
            r = sub
        if a >= np.uint64(0x477FF000):  # rounds to 65536 or more: infinity
            r = np.uint64(0x7C00)
        if a > np.uint64(0x7F800000):  # NaN
            r = np.uint64(0x7E00)
        return np.uint16(sign | r)

    @numba.njit(inline="always")
    def _widen_half(h, bits, m, is_bf16):
        """float32 bits of the bfloat16 (``is_bf16``) or binary16 values ``h[:m]`` into
        ``bits[:m]``, exactly (``bits`` must not overlap ``h``)."""
        if is_bf16:
            for k in range(m):
                bits[k] = np.uint32(h[k]) << np.uint32(16)
        else:
            _widen_f16(h, bits, m)

    @numba.njit(inline="always")
    def _narrow_half(bits, out, m, is_bf16):
        """The float32 bits ``bits[:m]`` rounded (to nearest even) to bfloat16 or binary16
        bits in ``out[:m]``."""
        if is_bf16:
            for k in range(m):
                out[k] = _bf16_bits(np.uint64(bits[k]))
        else:
            for k in range(m):
                out[k] = _f16_bits(np.uint64(bits[k]))

    def _masked_scale_half(x, out, seed, offset, stream, threshold, scale, is_bf16):
        n = x.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        s = np.float32(scale)
        for b in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(b, first, calls, offset, n, stream, k0, k1, words)
            m = hi - lo
            xv, ov, wv = x[lo:hi], out[lo:hi], words[w : w + m]
            bits = np.empty(m, np.uint32)  # fresh scratch: no overlap with xv
            vals = bits.view(np.float32)
            _widen_half(xv, bits, m, is_bf16)
            for k in range(m):
                vals[k] = vals[k] * s if wv[k] >= thr else np.float32(0.0)
            _narrow_half(bits, ov, m, is_bf16)

    def _alpha_affine(x, out, seed, offset, stream, threshold, fill, a, b):
        """``out = where(keep, x, fill) * a + b`` in the data's precision (two roundings, as
        torch's ``where(...) * a + b``)."""
        n = x.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        f, sa, sb = x.dtype.type(fill), x.dtype.type(a), x.dtype.type(b)
        for blk in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(blk, first, calls, offset, n, stream, k0, k1, words)
            xv, ov, wv = x[lo:hi], out[lo:hi], words[w : w + hi - lo]
            for k in range(hi - lo):
                v = xv[k] if wv[k] >= thr else f
                ov[k] = v * sa
            for k in range(hi - lo):
                ov[k] = ov[k] + sb

    def _alpha_affine_half(x, out, seed, offset, stream, threshold, fill, a, b, is_bf16):
        """:func:`_alpha_affine` on bfloat16 (``is_bf16``) or float16 bits (uint16): the kept
        value or ``fill`` (the type's bits) widened to float32, times ``float32(a)``, rounded
        to the type; widened again, plus ``b`` (a float32 holding a value of the type: torch
        rounds the scalar of ``add_`` to the tensor's type), rounded again."""
        n = x.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        f = np.uint16(fill)
        sa, sb = np.float32(a), np.float32(b)
        for blk in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(blk, first, calls, offset, n, stream, k0, k1, words)
            m = hi - lo
            xv, ov, wv = x[lo:hi], out[lo:hi], words[w : w + m]
            half = np.empty(m, np.uint16)
            for k in range(m):
                half[k] = xv[k] if wv[k] >= thr else f
            bits = np.empty(m, np.uint32)  # fresh scratch: no overlap with half
            vals = bits.view(np.float32)
            _widen_half(half, bits, m, is_bf16)  # the product, rounded to the type
            for k in range(m):
                vals[k] = vals[k] * sa
            _narrow_half(bits, half, m, is_bf16)
            _widen_half(half, bits, m, is_bf16)  # then the sum, rounded again
            for k in range(m):
                vals[k] = vals[k] + sb
            _narrow_half(bits, ov, m, is_bf16)

    def _scaled_keep(out, seed, offset, stream, threshold, value):
        """``out[i] = value`` where position ``offset + i`` is kept, else 0 (any dtype)."""
        n = out.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        thr = np.uint32(threshold)
        zero = out.dtype.type(0)
        v = out.dtype.type(value)
        for b in numba.prange(blocks):
            words = np.empty(4 * BLOCK, np.uint32)
            lo, hi, w = _block(b, first, calls, offset, n, stream, k0, k1, words)
            ov, wv = out[lo:hi], words[w : w + hi - lo]
            for k in range(hi - lo):
                ov[k] = v if wv[k] >= thr else zero

    # ------------------------------------------------------------------ Gaussian noise
    # Box-Muller normals (dropkit.functional.standard_normal): position 2k and 2k + 1 share the
    # words (w_2k, w_2k+1): z_2k = sqrt(-2 ln u1) cos(2 pi u2), z_2k+1 = ... sin(2 pi u2), with
    # u1 = (w_2k + 1) 2^-32 and u2 = w_2k+1 2^-32. numba's np.log/np.cos/np.sin are scalar libm
    # calls (no vector maths library is assumed), ~15 ns per element; so the kernel evaluates
    # them with the fdlibm algorithms (Sun, 1993; the FreeBSD/musl kernels) written out in
    # +, -, *, / and sqrt only. These vectorise, are correctly rounded IEEE 754 operations
    # (numba does not contract them into FMAs without fastmath), and so give the same bits on
    # any CPU and in the NumPy twin (dropkit.rng.cpu_numpy), which repeats them step by step.
    #
    # * ln u1: v = w + 1 is converted exactly (the 2^52 magic-number trick), split into
    #   2^k * m with m in [sqrt(2)/2, sqrt(2)) from its bits, s = f / (2 + f) for f = m - 1, and
    #   ln m = 2 s + s R(s^2) with fdlibm's Lg1..Lg7 (e_log.c); -2 ln u1 = -2 (k - 32) ln 2 - 4 s
    #   - 2 s R, with ln 2 split in fdlibm's ln2_hi + ln2_lo (k ln2_hi exact).
    # * The angle is reduced exactly on the integer word: w + 2^29 = q 2^30 + r' gives the
    #   quadrant q and theta = (r' - 2^29) * 2 pi / 2^32 in [-pi/4, pi/4] (one rounding), then
    #   fdlibm's __kernel_sin / __kernel_cos (k_sin.c, k_cos.c) and the quadrant's swap / signs.
    #
    # Against Box-Muller in extended precision, z is within 4 ulps where |z| > 0.1 and 1.5e-15
    # everywhere; the libm / SLEEF evaluation (torch's, NumPy's), which rounds the angle 2 pi u2
    # before its cosine, is within 2.8e-15 (tests/rng/test_gaussian_kernel.py). The two agree to
    # 1e-14, and rounded to float32 / bfloat16 / float16 they agree but for a value within that
    # distance of a rounding boundary (of order 1e-8 per value).
    #
    # Speed (one core, ~3.3 ns per position, most of it the float64 arithmetic and the Philox
    # words): each chunk of _CHUNK pairs runs the words, then the normals through five short
    # loops over L1-resident scratch, then the output. One long loop body is slower: its
    # dependency chain leaves the FP scheduler waiting, while short loops keep every unit busy;
    # the division and the square root (their own unit) sit in loops with polynomial work.

    _CHUNK = 256  # pairs per pass of the normal loops: 8 scratch arrays of 2 KiB

    _f64_bits = bitcast(_types.float64, _types.uint64)
    _bits_f64 = bitcast(_types.uint64, _types.float64)
    _f32_bits = bitcast(_types.float32, _types.uint32)
    _bits_f32 = bitcast(_types.uint32, _types.float32)

    # fdlibm's constants (MAGIC, K_BIAS, NLG1 .., S1 .., C1 ..) are dropkit.rng.fdlibm's
    _TWO52 = 2.0**52
    _ONE64 = np.uint64(1)
    _SHIFT30 = np.uint32(30)

    @numba.njit(inline="always")
    def _philox_pairs(q0, m, stream, k0, k1, ev, od):
        """:func:`_philox_block`'s words, split by pair: ``ev[j]`` and ``od[j]`` are words
        ``2j`` and ``2j + 1`` of calls ``q0 ..`` (u1's and u2's word of pair ``j``). Calls ``t``
        and ``t + h`` run side by side (two independent chains per iteration: ~25% faster than
        one); for odd ``m`` one call past the end is computed into the arrays' spare room."""
        r = _round_keys(k0, k1)
        h = (m + 1) >> 1
        for t in range(h):
            q = q0 + np.uint64(t)
            c = _philox10(q, stream, r)
            d = _philox10(q + np.uint64(h), stream, r)
            ev[2 * t] = np.uint32(c[0])
            od[2 * t] = np.uint32(c[1])
            ev[2 * t + 1] = np.uint32(c[2])
            od[2 * t + 1] = np.uint32(c[3])
            u = t + h
            ev[2 * u] = np.uint32(d[0])
            od[2 * u] = np.uint32(d[1])
            ev[2 * u + 1] = np.uint32(d[2])
            od[2 * u + 1] = np.uint32(d[3])

    @numba.njit(inline="always")
    def _normal_pairs(ev, od, m, f_, k_, s_, g_, t_, q_, a_, b_, zs):
        """``zs[2j], zs[2j + 1]`` = the two normals of word pair ``(ev[j], od[j])``, j < m
        (m <= _CHUNK); the other arrays are float64 scratch of _CHUNK elements."""
        for j in range(m):  # ln u1's argument reduction; the angle's, exactly
            v = _bits_f64((np.uint64(ev[j]) + _ONE64) | MAGIC) - _TWO52
            hx = _f64_bits(v)
            mant = hx & MANT_BITS
            up = (mant + SQRT2_CARRY) & BIT52  # m >= sqrt 2: use m / 2 and k + 1
            f_[j] = _bits_f64(mant | (up ^ EXP_ONE)) - 1.0
            k_[j] = _bits_f64(((hx >> SHIFT52) + (up >> SHIFT52)) | MAGIC) - K_BIAS
            turn = np.uint32(od[j] + QUARTER)
            q_[j] = np.float64(np.int32(turn >> _SHIFT30))
            t_[j] = ANGLE * np.float64(np.int32(turn & LOW30) - np.int32(QUARTER))
        for j in range(m):  # the division (its own unit) beside the sine polynomial
            f = f_[j]
            s_[j] = f / (2.0 + f)
            x = t_[j]
            z = x * x
            w = z * z
            r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6)
            a_[j] = x + z * x * (S1 + z * r)
        for j in range(m):  # -2 ln u1
            s = s_[j]
            z = s * s
            w = z * z
            t1 = w * (NLG2 + w * (NLG4 + w * NLG6))
            t2 = z * (NLG1 + w * (NLG3 + w * (NLG5 + w * NLG7)))
            k = k_[j]
            g_[j] = ((s * (t2 + t1) + k * NLN2_LO) + s * -4.0) + k * NLN2_HI
        for j in range(m):
            x = t_[j]
            z = x * x
            w = z * z
            r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6))
            hz = 0.5 * z
            c = 1.0 - hz
            b_[j] = c + (((1.0 - c) - hz) + z * r)
        for j in range(m):  # quadrant q: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c)
            q = q_[j]
            sn, cs = a_[j], b_[j]
            swap = (q == 1.0) | (q == 3.0)
            cm = sn if swap else cs
            sm = cs if swap else sn
            radius = np.sqrt(g_[j])  # the square root (its own unit) beside the selects
            zs[2 * j] = radius * (-cm if (q == 1.0) | (q == 2.0) else cm)
            zs[2 * j + 1] = radius * (-sm if q >= 2.0 else sm)

    @numba.njit(inline="always")
    def _chunk_normals(q, m, offset, n, stream, k0, k1, ev, od, f_, k_, s_, g_, t_, q_, a_, b_, zs):
        """The normals of Philox calls ``q .. q + m - 1`` (m <= _CHUNK / 2) into ``zs`` (indexed
        by word position from ``4 q``); returns ``(lo, hi, w)``: elements ``lo .. hi - 1`` take
        ``zs[w .. w + hi - lo - 1]`` (empty when the calls hold no element)."""
        _philox_pairs(q, m, stream, k0, k1, ev, od)
        base = np.int64(q << np.uint64(2)) - np.int64(offset)  # tensor index of word 0
        lo = max(base, 0)
        hi = max(min(base + 4 * m, n), lo)
        w = lo - base
        if hi > lo:
            pairs = (w + hi - lo + 1) >> 1
            _normal_pairs(ev, od, pairs, f_, k_, s_, g_, t_, q_, a_, b_, zs)
        return lo, hi, w

    def _gaussian(x, out, seed, offset, stream, sigma, raw):
        """``out = x * dtype(1 + sigma * z)`` (float32/float64: the noise in float64, rounded
        once, then the product in the data's precision); with ``raw``, ``out = z`` (float64
        ``out``; ``x`` unread)."""
        n = out.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        one = np.float64(1.0)
        for blk in numba.prange(blocks):
            # Each pass (words, normals, output) covers _CHUNK pairs, so all of it stays in L1.
            ev, od = np.empty(_CHUNK, np.uint32), np.empty(_CHUNK, np.uint32)
            f_, k_, s_, g_ = np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK)
            t_, q_, a_, b_ = np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK)
            zs = np.empty(2 * _CHUNK)
            q0 = first + np.uint64(blk) * np.uint64(BLOCK)
            m = np.int64(min(np.uint64(BLOCK), calls - np.uint64(blk) * np.uint64(BLOCK)))
            for c in range(0, m, _CHUNK // 2):
                lo, hi, w = _chunk_normals(q0 + np.uint64(c), min(_CHUNK // 2, m - c), offset, n,
                                           np.uint64(stream), k0, k1, ev, od, f_, k_, s_, g_, t_,
                                           q_, a_, b_, zs)  # fmt: skip
                ov, zv = out[lo:hi], zs[w : w + hi - lo]
                if raw:
                    for k in range(hi - lo):
                        ov[k] = zv[k]
                else:
                    xv = x[lo:hi]
                    for k in range(hi - lo):
                        ov[k] = xv[k] * out.dtype.type(one + sigma * zv[k])

    @numba.njit(inline="always")
    def _bf16_select(u):
        """:func:`_bf16_bits` with its NaN case selected instead of returned early (a branch
        in a loop stops it from vectorising); the same bits."""
        r = np.uint16((u + np.uint64(0x7FFF) + ((u >> np.uint64(16)) & np.uint64(1))) >> 16)
        return np.uint16(0x7FC0) if (u & np.uint64(0x7FFFFFFF)) > np.uint64(0x7F800000) else r

    @numba.njit(inline="always")
    def _widen_f16(h, bits, m):
        """float32 bits of the binary16 values ``h[:m]`` into ``bits[:m]``, exactly: exponent
        and mantissa shifted into place and scaled by 2^112 (right for subnormals too), then
        inf/NaN and the sign mended; one simple loop per step (they vectorise). ``h`` is read
        again after ``bits`` is written, so the two must not overlap."""
        vals = bits.view(np.float32)
        for k in range(m):
            bits[k] = (np.uint32(h[k]) & np.uint32(0x7FFF)) << np.uint32(13)
        for k in range(m):
            vals[k] = vals[k] * _TWO112
        for k in range(m):
            g = np.uint32(h[k])
            if (g & np.uint32(0x7C00)) == np.uint32(0x7C00):
                bits[k] = np.uint32(0x7F800000) | ((g & np.uint32(0x3FF)) << np.uint32(13))
            bits[k] |= (g & np.uint32(0x8000)) << np.uint32(16)

    @numba.njit(inline="always")
    def _half_product(xv, ov, zv, sigma, is_bf16, nb, xb):
        """``ov = half(half_value(xv) * half_value(half(float32(1 + sigma * zv))))`` for
        bfloat16 / binary16 bits, through float32 scratch ``nb``, ``xb`` (uint32 views)."""
        m = ov.size
        one = np.float64(1.0)
        nv, xf = nb.view(np.float32), xb.view(np.float32)
        for k in range(m):
            nv[k] = np.float32(one + sigma * zv[k])
        if is_bf16:
            for k in range(m):
                nb[k] = np.uint32(_bf16_select(np.uint64(nb[k]))) << np.uint32(16)
            for k in range(m):
                xb[k] = np.uint32(xv[k]) << np.uint32(16)
            for k in range(m):
                xf[k] = xf[k] * nv[k]
            for k in range(m):
                ov[k] = _bf16_select(np.uint64(xb[k]))
        else:
            for k in range(m):  # the noise's binary16 bits, parked in xb
                xb[k] = np.uint32(_f16_bits(np.uint64(nb[k])))
            _widen_f16(xb, nb, m)
            _widen_f16(xv, xb, m)
            for k in range(m):
                xf[k] = xf[k] * nv[k]
            for k in range(m):
                ov[k] = _f16_bits(np.uint64(xb[k]))

    def _gaussian_half(x, out, seed, offset, stream, sigma, is_bf16):
        """:func:`_gaussian` for bfloat16 / float16 bits (uint16): the noise rounded from
        float64 to float32 and then to the half type (torch's ``.to`` from float64 goes through
        float32), the product of the two half values in float32 rounded once to the half type
        (torch's half multiply), both with round-to-nearest-even."""
        n = out.size
        k0, k1, first, calls, blocks = _setup(seed, offset, n)
        for blk in numba.prange(blocks):
            ev, od = np.empty(_CHUNK, np.uint32), np.empty(_CHUNK, np.uint32)
            f_, k_, s_, g_ = np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK)
            t_, q_, a_, b_ = np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK), np.empty(_CHUNK)
            zs = np.empty(2 * _CHUNK)
            nb, xb = np.empty(2 * _CHUNK, np.uint32), np.empty(2 * _CHUNK, np.uint32)
            q0 = first + np.uint64(blk) * np.uint64(BLOCK)
            m = np.int64(min(np.uint64(BLOCK), calls - np.uint64(blk) * np.uint64(BLOCK)))
            for c in range(0, m, _CHUNK // 2):
                lo, hi, w = _chunk_normals(q0 + np.uint64(c), min(_CHUNK // 2, m - c), offset, n,
                                           np.uint64(stream), k0, k1, ev, od, f_, k_, s_, g_, t_,
                                           q_, a_, b_, zs)  # fmt: skip
                _half_product(x[lo:hi], out[lo:hi], zs[w : w + hi - lo], sigma, is_bf16,
                              nb[: hi - lo], xb[: hi - lo])  # fmt: skip

    _masked_scale_parallel, _masked_scale_serial = _twins(_masked_scale)
    _masked_scale_half_parallel, _masked_scale_half_serial = _twins(_masked_scale_half)
    _scaled_keep_parallel, _scaled_keep_serial = _twins(_scaled_keep)
    _alpha_affine_parallel, _alpha_affine_serial = _twins(_alpha_affine)
    _alpha_affine_half_parallel, _alpha_affine_half_serial = _twins(_alpha_affine_half)
    _words_parallel, _words_serial = _twins(_words)
    _bias_dropout_add_parallel, _bias_dropout_add_serial = _twins(_bias_dropout_add)
    _gaussian_parallel, _gaussian_serial = _twins(_gaussian, error_model="numpy")
    _gaussian_half_parallel, _gaussian_half_serial = _twins(_gaussian_half, error_model="numpy")

    # Entry points by address, for small tensors. Turning a torch tensor into a NumPy array
    # (``.numpy()``) costs about 1 us bare, but inside an autograd Function's forward or
    # backward the two views cost ten or more (measured: 14 us more per forward+backward
    # than the same kernel called by address); numba then types the arrays. A call by address
    # passes ints and costs about 0.5 us. These entries also keep the GIL: inside autograd's
    # backward every release and re-acquisition of the GIL costs about 3 us (measured: a
    # nogil call 4.5 us, the same call holding the GIL 1.5 us), more than the whole kernel at
    # these sizes (at most ADDRESS_MAX elements, about 16 us of work). The caller keeps the
    # tensors alive, contiguous, on the CPU and of the entry's dtype for the call.

    #: Largest tensor (elements) the by-address entries take; larger calls go through the
    #: array kernels, which release the GIL.
    ADDRESS_MAX = 1 << 14

    _f32_at = address_of(_types.float32)
    _f64_at = address_of(_types.float64)
    _u16_at = address_of(_types.uint16)

    @cached_njit()
    def masked_scale_f32_at(x, out, n, seed, offset, stream, threshold, scale):
        """:func:`masked_scale_kernel`, serial, on ``n`` float32 at addresses ``x``, ``out``."""
        xs, os_ = numba.carray(_f32_at(x), n), numba.carray(_f32_at(out), n)
        _masked_scale_serial(xs, os_, seed, offset, stream, threshold, scale)

    @cached_njit()
    def masked_scale_f64_at(x, out, n, seed, offset, stream, threshold, scale):
        """:func:`masked_scale_kernel`, serial, on ``n`` float64 at addresses ``x``, ``out``."""
        xs, os_ = numba.carray(_f64_at(x), n), numba.carray(_f64_at(out), n)
        _masked_scale_serial(xs, os_, seed, offset, stream, threshold, scale)

    @cached_njit()
    def masked_scale_half_at(x, out, n, seed, offset, stream, threshold, scale, is_bf16):
        """:func:`masked_scale_half_kernel`, serial, on ``n`` 16-bit values at addresses
        ``x``, ``out``."""
        xs, os_ = numba.carray(_u16_at(x), n), numba.carray(_u16_at(out), n)
        _masked_scale_half_serial(xs, os_, seed, offset, stream, threshold, scale, is_bf16)

    @cached_njit()
    def gaussian_f32_at(x, out, n, seed, offset, stream, sigma):
        """:func:`gaussian_kernel`, serial, on ``n`` float32 at addresses ``x``, ``out``
        (``n >= 1``)."""
        xs, os_ = numba.carray(_f32_at(x), n), numba.carray(_f32_at(out), n)
        _gaussian_serial(xs, os_, seed, offset, stream, sigma, False)

    @cached_njit()
    def gaussian_f64_at(x, out, n, seed, offset, stream, sigma):
        """:func:`gaussian_kernel`, serial, on ``n`` float64 at addresses ``x``, ``out``
        (``n >= 1``)."""
        xs, os_ = numba.carray(_f64_at(x), n), numba.carray(_f64_at(out), n)
        _gaussian_serial(xs, os_, seed, offset, stream, sigma, False)

    @cached_njit()
    def gaussian_half_at(x, out, n, seed, offset, stream, sigma, is_bf16):
        """:func:`gaussian_half_kernel`, serial, on ``n`` 16-bit values at addresses ``x``,
        ``out`` (``n >= 1``)."""
        xs, os_ = numba.carray(_u16_at(x), n), numba.carray(_u16_at(out), n)
        _gaussian_half_serial(xs, os_, seed, offset, stream, sigma, is_bf16)

    @cached_njit()
    def scaled_keep_f32_at(out, n, seed, offset, stream, threshold, value):
        """:func:`scaled_keep_kernel`, serial, into ``n`` float32 at address ``out``."""
        _scaled_keep_serial(numba.carray(_f32_at(out), n), seed, offset, stream, threshold, value)

    @cached_njit()
    def scaled_keep_f64_at(out, n, seed, offset, stream, threshold, value):
        """:func:`scaled_keep_kernel`, serial, into ``n`` float64 at address ``out``."""
        _scaled_keep_serial(numba.carray(_f64_at(out), n), seed, offset, stream, threshold, value)

    @cached_njit()
    def scaled_keep_u16_at(out, n, seed, offset, stream, threshold, value):
        """:func:`scaled_keep_kernel`, serial, into ``n`` uint16 (half bits) at address ``out``."""
        _scaled_keep_serial(numba.carray(_u16_at(out), n), seed, offset, stream, threshold, value)

    @cached_njit()
    def masked_fill_f32_at(x, out, n, seed, offset, stream, threshold, scale):
        """:func:`masked_scale_f32_at` of a tensor whose ``n`` elements are all the one float32
        at address ``x`` (an expanded scalar, the gradient of ``sum()``): ``out[i] = x * scale``
        where kept, else 0, the product rounded as the element-wise kernel rounds it."""
        value = numba.carray(_f32_at(x), 1)[0] * np.float32(scale)
        _scaled_keep_serial(numba.carray(_f32_at(out), n), seed, offset, stream, threshold, value)

    @cached_njit()
    def masked_fill_f64_at(x, out, n, seed, offset, stream, threshold, scale):
        """:func:`masked_fill_f32_at` for float64."""
        value = numba.carray(_f64_at(x), 1)[0] * scale
        _scaled_keep_serial(numba.carray(_f64_at(out), n), seed, offset, stream, threshold, value)


def _run(parallel, serial, size: int, serial_max: int, *args) -> None:
    """``serial(*args)`` for at most ``serial_max`` positions (no thread pool woken for small
    work), else :func:`dropkit.rng.threads.launch`, which picks the twin that pays and is safe."""
    if size <= serial_max:
        serial(*args)
    else:
        launch(parallel, serial, *args)


def masked_scale_kernel(x, out, seed, offset, stream, threshold, scale):
    """``out[i] = x[i] * scale`` where position ``offset + i`` is kept, else 0.

    ``x`` and ``out`` are flat float32/float64 arrays (``out`` may be ``x``); ``threshold``
    is the unsigned keep threshold; p = 1 is handled by the caller.
    """
    args = (x, out, seed, offset, stream, threshold, scale)
    _run(_masked_scale_parallel, _masked_scale_serial, x.size, _threads.SERIAL_MAX, *args)


def masked_scale_half_kernel(x, out, seed, offset, stream, threshold, scale, is_bf16):
    """:func:`masked_scale_kernel` for bfloat16 (``is_bf16``) or float16 data given as flat
    uint16 arrays of their bits: ``x * scale`` computed in float32 and rounded to nearest even.
    """
    args = (x, out, seed, offset, stream, threshold, scale, is_bf16)
    serial_max = _threads.SERIAL_MAX
    _run(_masked_scale_half_parallel, _masked_scale_half_serial, x.size, serial_max, *args)


def alpha_affine_kernel(x, out, seed, offset, stream, threshold, fill, a, b):
    """``out[i] = (x[i] if position offset + i is kept else fill) * a + b`` (flat float32 or
    float64 arrays; the product and the sum each rounded to the data's precision)."""
    args = (x, out, seed, offset, stream, threshold, fill, a, b)
    _run(_alpha_affine_parallel, _alpha_affine_serial, x.size, _threads.SERIAL_MAX, *args)


def alpha_affine_half_kernel(x, out, seed, offset, stream, threshold, fill, a, b, is_bf16):
    """:func:`alpha_affine_kernel` for bfloat16 (``is_bf16``) or float16 data given as flat
    uint16 arrays of their bits (``fill`` as the type's bits, ``b`` a value of the type): the
    product in float32 rounded to the type, then the sum, as torch's
    ``where(keep, x, fill).mul_(a).add_(b)`` on such tensors."""
    args = (x, out, seed, offset, stream, threshold, fill, a, b, is_bf16)
    serial_max = _threads.SERIAL_MAX
    _run(_alpha_affine_half_parallel, _alpha_affine_half_serial, x.size, serial_max, *args)


def scaled_keep_kernel(out, seed, offset, stream, threshold, value):
    """``out[i] = value`` where position ``offset + i`` is kept, else 0 (a flat array of any
    numeric dtype; ``value`` already in that dtype, e.g. bfloat16 bits in a uint16 array)."""
    args = (out, seed, offset, stream, threshold, value)
    _run(_scaled_keep_parallel, _scaled_keep_serial, out.size, _threads.SERIAL_MAX, *args)


def words_kernel(out, seed, offset, stream):
    """``out[i]`` (uint32) = the Philox word of stream position ``offset + i``."""
    args = (out, seed, offset, stream)
    _run(_words_parallel, _words_serial, out.size, _threads.SERIAL_MAX, *args)


def bias_dropout_add_kernel(x, bias, residual, out, seed, offset, stream, threshold, scale):
    """``out[i] = residual[i] + keep(i) * (x[i] + bias[i % H]) * scale`` in one pass.

    ``x``, ``residual`` and ``out`` are flat arrays of ``n`` elements, ``bias`` has ``H``
    (the last dim of x); the keep decision is that of :func:`masked_scale_kernel`.
    """
    args = (x, bias, residual, out, seed, offset, stream, threshold, scale)
    serial_max = _threads.SERIAL_MAX
    _run(_bias_dropout_add_parallel, _bias_dropout_add_serial, x.size, serial_max, *args)


#: Largest tensor (elements) that the Gaussian kernels run serially. A Gaussian position costs
#: about three times a dropout position (two float64 polynomials, a division and a square root
#: per pair of positions), so the serial run reaches the time of dropout's serial limit
#: (:data:`dropkit.rng.threads.SERIAL_MAX`, 2^18 positions) at about 2^16.
GAUSSIAN_SERIAL_MAX = 1 << 16


def gaussian_kernel(x, out, seed, offset, stream, sigma):
    """``out[i] = x[i] * dtype(1 + sigma * z_i)``, ``z_i`` the Box-Muller normal of stream
    position ``offset + i`` (:func:`normal_kernel`), ``1 + sigma * z_i`` computed in float64 and
    rounded once to the data's dtype, the product in that dtype (flat float32 or float64 arrays;
    ``out`` may be ``x``). This is ``x * gaussian_noise(...)`` of
    :mod:`dropkit.functional.gaussian` in one pass, the noise never stored.
    """
    if out.size == 0:
        return
    args = (x, out, seed, offset, stream, sigma, False)
    _run(_gaussian_parallel, _gaussian_serial, out.size, GAUSSIAN_SERIAL_MAX, *args)


def gaussian_half_kernel(x, out, seed, offset, stream, sigma, is_bf16):
    """:func:`gaussian_kernel` for bfloat16 (``is_bf16``) or float16 data given as flat uint16
    arrays of their bits: the noise rounded float64 -> float32 -> half (as torch's ``.to``), the
    product computed in float32 and rounded to nearest even (as torch's half multiply)."""
    if out.size == 0:
        return
    args = (x, out, seed, offset, stream, sigma, is_bf16)
    _run(_gaussian_half_parallel, _gaussian_half_serial, out.size, GAUSSIAN_SERIAL_MAX, *args)


def normal_kernel(out, seed, offset, stream):
    r"""``out[i]`` (float64) = the standard normal of stream position ``offset + i``.

    Box-Muller on the Philox words (:func:`dropkit.functional.standard_normal`): positions
    ``2k, 2k + 1`` share words ``(w_2k, w_2k+1)``, :math:`u_1 = (w_{2k} + 1) 2^{-32}`,
    :math:`u_2 = w_{2k+1} 2^{-32}`, :math:`z_{2k} = \sqrt{-2 \ln u_1} \cos 2\pi u_2`,
    :math:`z_{2k+1} = \sqrt{-2 \ln u_1} \sin 2\pi u_2`; any ``offset`` (an odd one starts at
    the sine of a pair).

    Evaluated in float64 with fdlibm's logarithm, sine and cosine written in exactly rounded
    IEEE operations (see the comment above ``_normal_pairs``), so the bits are the same on every
    CPU, in the serial and parallel kernels, and in the NumPy twin. Against the libm / SLEEF
    evaluation of the same formula (NumPy's, torch's) each value is within a few units in the
    last place (absolute difference below 1e-14); rounded to float32, bfloat16 or float16 the
    values agree (checked on 2^20 positions per dtype).
    """
    if out.size == 0:
        return
    args = (out, out, seed, offset, stream, 1.0, True)
    _run(_gaussian_parallel, _gaussian_serial, out.size, GAUSSIAN_SERIAL_MAX, *args)


def warm_from_cache() -> int:
    """Load, from numba's on-disk cache, the kernels that small eager calls use first: one
    call each on four elements, skipping any kernel that would have to compile (it compiles on
    its first real call instead, on the caller's thread; see
    :func:`dropkit.rng.jitcache.call_if_cached`). Returns how many were loaded."""
    from .jitcache import call_if_cached

    loaded = 0
    x = np.ones(4, dtype=np.float32)
    loaded += call_if_cached(_masked_scale_serial, x, x, 0, 0, 0, 1 << 31, 2.0)
    warm_ups = []
    for dtype, entry, extra in (
        (np.float32, masked_scale_f32_at, ()),
        (np.float64, masked_scale_f64_at, ()),
        (np.uint16, masked_scale_half_at, (True,)),
        (np.float32, masked_fill_f32_at, ()),
        (np.float64, masked_fill_f64_at, ()),
    ):
        warm_ups.append((dtype, entry, (0, 0, 0, 1 << 31, 2.0, *extra), True))
    for dtype, entry, value in (
        (np.float32, scaled_keep_f32_at, 2.0),
        (np.float64, scaled_keep_f64_at, 2.0),
        (np.uint16, scaled_keep_u16_at, 1),
    ):
        warm_ups.append((dtype, entry, (0, 0, 0, 1 << 31, value), False))
    for dtype, entry, extra in (
        (np.float32, gaussian_f32_at, ()),
        (np.float64, gaussian_f64_at, ()),
        (np.uint16, gaussian_half_at, (True,)),
    ):
        warm_ups.append((dtype, entry, (0, 0, 0, 0.5, *extra), True))
    for dtype, entry, rest, reads_input in warm_ups:
        y = np.ones(4, dtype=dtype)
        head = (y.ctypes.data, y.ctypes.data, 4) if reads_input else (y.ctypes.data, 4)
        loaded += call_if_cached(entry, *head, *rest)
    return loaded
