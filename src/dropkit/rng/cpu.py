"""CPU kernels (numba): Philox-4x32-10 masks fused with the masked rescale.

The kernels implement exactly the specification in :mod:`dropkit.rng.philox` (counter
``(q lo, q hi, stream, 0)`` for ``q = j >> 2``, word ``j & 3``, unsigned compare against the
threshold), so their masks are bit-identical to the NumPy reference. Work is split over Philox
calls with ``prange``: each call serves four adjacent elements, nothing is shared between
iterations, and nothing but the output is written (no mask is stored).

numba promotes ``uint32 * uint32`` to 64 bits, so all 32-bit arithmetic is done in uint64 and
masked back to 32 bits after every multiply and add.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    _M0 = np.uint64(0xD2511F53)
    _M1 = np.uint64(0xCD9E8D57)
    _W0 = np.uint64(0x9E3779B9)
    _W1 = np.uint64(0xBB67AE85)
    _MASK = np.uint64(0xFFFFFFFF)
    _S32 = np.uint64(32)

    @numba.njit(inline="always")
    def _philox(c0, c1, c2, c3, k0, k1):
        for r in range(10):
            if r > 0:
                k0 = (k0 + _W0) & _MASK
                k1 = (k1 + _W1) & _MASK
            p0 = _M0 * c0
            p1 = _M1 * c2
            n0 = (p1 >> _S32) ^ c1 ^ k0
            n2 = (p0 >> _S32) ^ c3 ^ k1
            c0, c1, c2, c3 = n0, p1 & _MASK, n2, p0 & _MASK
        return c0, c1, c2, c3

    @numba.njit(inline="always")
    def _setup(seed, offset, n):
        """Key words and the range of Philox calls covering positions offset .. offset+n-1."""
        first = np.uint64(offset) >> np.uint64(2)
        calls = ((np.uint64(offset) + np.uint64(n) + np.uint64(3)) >> np.uint64(2)) - first
        return np.uint64(seed) & _MASK, np.uint64(seed) >> _S32, first, calls

    @numba.njit(parallel=True, cache=True)
    def masked_scale_kernel(x, out, seed, offset, stream, threshold, scale):
        """``out[i] = x[i] * scale`` where position ``offset + i`` is kept, else 0.

        ``x`` and ``out`` are flat float32/float64 arrays (``out`` may be ``x``); ``threshold``
        is the unsigned keep threshold; p = 1 is handled by the caller.
        """
        n = x.size
        k0, k1, first, calls = _setup(seed, offset, n)
        thr = np.uint64(threshold)
        zero = x.dtype.type(0)
        s = x.dtype.type(scale)
        for t in numba.prange(calls):
            q = first + np.uint64(t)
            w0, w1, w2, w3 = _philox(q & _MASK, q >> _S32, np.uint64(stream), np.uint64(0), k0, k1)
            base = np.int64(q << np.uint64(2)) - np.int64(offset)
            for lane in range(4):
                i = base + lane
                if 0 <= i < n:
                    w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
                    out[i] = x[i] * s if w >= thr else zero

    @numba.njit(parallel=True, cache=True)
    def words_kernel(out, seed, offset, stream):
        """``out[i]`` (uint32) = the Philox word of stream position ``offset + i``."""
        n = out.size
        k0, k1, first, calls = _setup(seed, offset, n)
        for t in numba.prange(calls):
            q = first + np.uint64(t)
            w0, w1, w2, w3 = _philox(q & _MASK, q >> _S32, np.uint64(stream), np.uint64(0), k0, k1)
            base = np.int64(q << np.uint64(2)) - np.int64(offset)
            for lane in range(4):
                i = base + lane
                if 0 <= i < n:
                    w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
                    out[i] = np.uint32(w)

    @numba.njit(parallel=True, cache=True)
    def bias_dropout_add_kernel(x, bias, residual, out, seed, offset, stream, threshold, scale):
        """``out[i] = residual[i] + keep(i) * (x[i] + bias[i % H]) * scale`` in one pass.

        ``x``, ``residual`` and ``out`` are flat arrays of ``n`` elements, ``bias`` has ``H``
        (the last dim of x); the keep decision is that of :func:`masked_scale_kernel`.
        """
        n = x.size
        h = bias.size
        k0, k1, first, calls = _setup(seed, offset, n)
        thr = np.uint64(threshold)
        s = x.dtype.type(scale)
        for t in numba.prange(calls):
            q = first + np.uint64(t)
            w0, w1, w2, w3 = _philox(q & _MASK, q >> _S32, np.uint64(stream), np.uint64(0), k0, k1)
            base = np.int64(q << np.uint64(2)) - np.int64(offset)
            # One division per Philox call, not per element: the bias column then advances
            # with a wrap (a 64-bit modulo per element halved the kernel's speed).
            col = (base if base >= 0 else base + 4 * h) % h
            for lane in range(4):
                i = base + lane
                if 0 <= i < n:
                    w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
                    if w >= thr:
                        out[i] = residual[i] + (x[i] + bias[col]) * s
                    else:
                        out[i] = residual[i]
                col += 1
                while col >= h:
                    col -= h
