"""CPU kernels (numba): Philox-4x32-10 masks fused with the masked rescale.

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
"""

from __future__ import annotations

import types

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    from . import threads as _threads
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
    def _philox_block(q0, m, stream, k0, k1, words):
        """Words of Philox calls ``q0 .. q0 + m - 1`` into ``words[0 : 4 m]`` (uint32)."""
        # Round r uses key (k0 + r W0, k1 + r W1) mod 2^32; written out so that the loop
        # over calls is the innermost loop and vectorises.
        a0, b0 = k0, k1
        a1, b1 = (a0 + _W0) & _MASK, (b0 + _W1) & _MASK
        a2, b2 = (a1 + _W0) & _MASK, (b1 + _W1) & _MASK
        a3, b3 = (a2 + _W0) & _MASK, (b2 + _W1) & _MASK
        a4, b4 = (a3 + _W0) & _MASK, (b3 + _W1) & _MASK
        a5, b5 = (a4 + _W0) & _MASK, (b4 + _W1) & _MASK
        a6, b6 = (a5 + _W0) & _MASK, (b5 + _W1) & _MASK
        a7, b7 = (a6 + _W0) & _MASK, (b6 + _W1) & _MASK
        a8, b8 = (a7 + _W0) & _MASK, (b7 + _W1) & _MASK
        a9, b9 = (a8 + _W0) & _MASK, (b8 + _W1) & _MASK
        for t in range(m):
            q = q0 + np.uint64(t)
            c = _round(q & _MASK, q >> _S32, stream, np.uint64(0), a0, b0)
            c = _round(c[0], c[1], c[2], c[3], a1, b1)
            c = _round(c[0], c[1], c[2], c[3], a2, b2)
            c = _round(c[0], c[1], c[2], c[3], a3, b3)
            c = _round(c[0], c[1], c[2], c[3], a4, b4)
            c = _round(c[0], c[1], c[2], c[3], a5, b5)
            c = _round(c[0], c[1], c[2], c[3], a6, b6)
            c = _round(c[0], c[1], c[2], c[3], a7, b7)
            c = _round(c[0], c[1], c[2], c[3], a8, b8)
            c = _round(c[0], c[1], c[2], c[3], a9, b9)
            words[4 * t] = np.uint32(c[0])
            words[4 * t + 1] = np.uint32(c[1])
            words[4 * t + 2] = np.uint32(c[2])
            words[4 * t + 3] = np.uint32(c[3])

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

    def _twins(body):
        """A parallel and a serial dispatcher compiled from one Python body.

        With ``parallel=False`` numba runs ``prange`` as ``range``. The serial twin is a copy
        of the function under another qualified name because numba names cache files after
        the qualified name and does not key its index on ``parallel``: two dispatchers of one
        function would overwrite each other's cached code.
        """
        serial = types.FunctionType(
            body.__code__, body.__globals__, body.__name__ + "_serial", body.__defaults__
        )
        serial.__qualname__ = body.__qualname__ + "_serial"
        serial.__doc__ = body.__doc__
        return cached_njit(parallel=True, nogil=True)(body), cached_njit(nogil=True)(serial)

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
            bits = np.empty(m, np.uint32)
            vals = bits.view(np.float32)
            if is_bf16:
                for k in range(m):
                    bits[k] = np.uint32(xv[k]) << np.uint32(16)
            else:
                # binary16 -> float32: shift the exponent and mantissa into place and rescale by
                # 2^112 (exact, and right for subnormals), then mend inf/NaN and the sign.
                for k in range(m):
                    bits[k] = (np.uint32(xv[k]) & np.uint32(0x7FFF)) << np.uint32(13)
                for k in range(m):
                    vals[k] = vals[k] * _TWO112
                for k in range(m):
                    h = np.uint32(xv[k])
                    if (h & np.uint32(0x7C00)) == np.uint32(0x7C00):
                        bits[k] = np.uint32(0x7F800000) | ((h & np.uint32(0x3FF)) << np.uint32(13))
                    bits[k] |= (h & np.uint32(0x8000)) << np.uint32(16)
            for k in range(m):
                vals[k] = vals[k] * s if wv[k] >= thr else np.float32(0.0)
            if is_bf16:
                for k in range(m):
                    ov[k] = _bf16_bits(np.uint64(bits[k]))
            else:
                for k in range(m):
                    ov[k] = _f16_bits(np.uint64(bits[k]))

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

    _masked_scale_parallel, _masked_scale_serial = _twins(_masked_scale)
    _masked_scale_half_parallel, _masked_scale_half_serial = _twins(_masked_scale_half)
    _scaled_keep_parallel, _scaled_keep_serial = _twins(_scaled_keep)
    _alpha_affine_parallel, _alpha_affine_serial = _twins(_alpha_affine)
    _words_parallel, _words_serial = _twins(_words)
    _bias_dropout_add_parallel, _bias_dropout_add_serial = _twins(_bias_dropout_add)


def masked_scale_kernel(x, out, seed, offset, stream, threshold, scale):
    """``out[i] = x[i] * scale`` where position ``offset + i`` is kept, else 0.

    ``x`` and ``out`` are flat float32/float64 arrays (``out`` may be ``x``); ``threshold``
    is the unsigned keep threshold; p = 1 is handled by the caller.
    """
    if x.size <= _threads.SERIAL_MAX:
        _masked_scale_serial(x, out, seed, offset, stream, threshold, scale)
    else:
        launch(
            _masked_scale_parallel,
            _masked_scale_serial,
            x,
            out,
            seed,
            offset,
            stream,
            threshold,
            scale,
        )


def masked_scale_half_kernel(x, out, seed, offset, stream, threshold, scale, is_bf16):
    """:func:`masked_scale_kernel` for bfloat16 (``is_bf16``) or float16 data given as flat
    uint16 arrays of their bits: ``x * scale`` computed in float32 and rounded to nearest even.
    """
    args = (x, out, seed, offset, stream, threshold, scale, is_bf16)
    if x.size <= _threads.SERIAL_MAX:
        _masked_scale_half_serial(*args)
    else:
        launch(_masked_scale_half_parallel, _masked_scale_half_serial, *args)


def alpha_affine_kernel(x, out, seed, offset, stream, threshold, fill, a, b):
    """``out[i] = (x[i] if position offset + i is kept else fill) * a + b`` (flat float32 or
    float64 arrays; the product and the sum each rounded to the data's precision)."""
    args = (x, out, seed, offset, stream, threshold, fill, a, b)
    if x.size <= _threads.SERIAL_MAX:
        _alpha_affine_serial(*args)
    else:
        launch(_alpha_affine_parallel, _alpha_affine_serial, *args)


def scaled_keep_kernel(out, seed, offset, stream, threshold, value):
    """``out[i] = value`` where position ``offset + i`` is kept, else 0 (a flat array of any
    numeric dtype; ``value`` already in that dtype, e.g. bfloat16 bits in a uint16 array)."""
    if out.size <= _threads.SERIAL_MAX:
        _scaled_keep_serial(out, seed, offset, stream, threshold, value)
    else:
        launch(
            _scaled_keep_parallel, _scaled_keep_serial, out, seed, offset, stream, threshold, value
        )


def words_kernel(out, seed, offset, stream):
    """``out[i]`` (uint32) = the Philox word of stream position ``offset + i``."""
    if out.size <= _threads.SERIAL_MAX:
        _words_serial(out, seed, offset, stream)
    else:
        launch(_words_parallel, _words_serial, out, seed, offset, stream)


def bias_dropout_add_kernel(x, bias, residual, out, seed, offset, stream, threshold, scale):
    """``out[i] = residual[i] + keep(i) * (x[i] + bias[i % H]) * scale`` in one pass.

    ``x``, ``residual`` and ``out`` are flat arrays of ``n`` elements, ``bias`` has ``H``
    (the last dim of x); the keep decision is that of :func:`masked_scale_kernel`.
    """
    args = (x, bias, residual, out, seed, offset, stream, threshold, scale)
    if x.size <= _threads.SERIAL_MAX:
        _bias_dropout_add_serial(*args)
    else:
        launch(_bias_dropout_add_parallel, _bias_dropout_add_serial, *args)
