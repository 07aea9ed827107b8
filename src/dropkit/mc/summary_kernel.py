r"""CPU kernel (numba) folding float32 logits ``(k, R, V)``, classes last, into MC summaries.

:meth:`dropkit.mc.summary.Accumulator._classes` with torch ops reads a chunk six to eight
times (max with indices, exp, two sums, divide, mean, squared deviations); at LM scale
(V ~ 1e3..1e5) that is ~4.5 ns per element on one core. This kernel reads each row of ``V``
logits from memory once and does every statistic from L1, ~1.3 ns per element:

* per (row, sample): the max through an order-preserving int32 key of the float bits (LLVM
  vectorises integer max; a float max with NaN semantics it does not), the same pass checks
  for NaN and ``+inf``;
* :math:`e_c = \exp(x_c - m)` with a vectorisable exp of our own (Cody-Waite reduction
  :math:`x = n \ln 2 + r`, :math:`|r| \le \ln 2 / 2`, the degree-7 Cephes ``expf``
  polynomial, :math:`2^n` put into the exponent bits; <= 2 ulp against the exact value, < 1
  measured; below ``e^{-87.3}`` flushed to 0, < 1.2e-38 absolute), with
  :math:`s = \sum_c e_c` and :math:`d = \sum_c e_c (x_c - m)` in the same pass; then the
  first index of the max by a scan that stops there (a min-index reduction inside the exp
  loop stopped LLVM from vectorising it: 4.5 instead of 1 ns per element);
* :math:`p = e / s`, :math:`H = \log s - d / s` (:math:`\ge 0`: every term is), the vote,
  and Welford's update of the row's mean and squared deviations over the ``k`` samples
  (Welford 1962), which stay in L1.

A row with a NaN, a ``+inf``, or only ``-inf`` logits in any sample is left untouched and
flagged: the caller folds those rows with the torch formulas. ``-inf`` logits elsewhere give
:math:`p_c = 0` and add nothing to :math:`H` (``entr(0) = 0``), exactly as the torch path.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    import math

    from numba.core import types as _nt

    from ..rng.intrinsics import bitcast
    from ..rng.jitcache import cached_njit

    _bits = bitcast(_nt.float32, _nt.int32)  # the int32 key of a float32 (vectorisable)
    _float = bitcast(_nt.int32, _nt.float32)

    # No nnan/ninf: NaN and inf are detected exactly, on the integer keys.
    _FM = {"reassoc", "contract", "nsz", "arcp"}
    _I = np.int32
    _F = np.float32
    _S31, _S23, _M31, _BIAS = _I(31), _I(23), _I(0x7FFFFFFF), _I(127)
    #: key(-inf) and key(+inf): keys below the first are negative NaNs, above the second
    #: positive NaNs.
    _KEY_NINF = _I(-2139095041)
    _KEY_PINF = _I(0x7F800000)
    _LOG2E = _F(1.4426950408889634)
    _LN2HI = _F(0.693359375)  # ln 2 = _LN2HI + _LN2LO, _LN2HI exact in 9 bits
    _LN2LO = _F(-2.12194440e-4)
    _P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
    _P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
    #: Below this, exp is flushed to 0 (2^-126 is the smallest normal float32).
    _LO = _F(-87.3)

    @numba.njit(inline="always", fastmath=_FM)
    def _key(v):
        """Order-preserving int32 key of a float32: key(a) < key(b) iff a < b, NaNs last
        (positive) or first (negative)."""
        i = _bits(v)
        return _I(i ^ _I(_I(i >> _S31) & _M31))

    @numba.njit(inline="always", fastmath=_FM)
    def _exp(y):
        """``exp(y)`` for ``y <= 0`` in float32, vectorisable; 0 for ``y <= -87.3``."""
        z = y if y > _LO else _LO
        n = _I(z * _LOG2E - _F(0.5))  # truncation towards 0 of a negative: round(z / ln 2)
        nf = _F(n)
        r = z - nf * _LN2HI - nf * _LN2LO
        p = _P0
        p = p * r + _P1
        p = p * r + _P2
        p = p * r + _P3
        p = p * r + _P4
        p = p * r + _P5
        p = p * r * r + r + _F(1.0)
        e = p * _float(_I(_I(n + _BIAS) << _S23))
        return e if y > _LO else _F(0.0)

    @cached_njit(nogil=True, fastmath=_FM)
    def _fold_rows(x, out, keep, mean, m2, entropy, votes, bad, lo, hi):  # pragma: no cover
        """Rows ``lo .. hi - 1`` of ``x`` ``(k, R, V)`` (see module). Writes ``mean``, ``m2``
        ``(R, V)``, ``entropy`` ``(R,)`` (summed over the samples), adds the votes into
        ``votes`` ``(R, V)`` int32 and, with ``keep``, the probabilities into ``out``; a row
        that cannot be folded exactly here gets ``bad[r] = 1`` and nothing else."""
        k, _, v = x.shape
        tops = np.empty(k, np.float32)
        e = np.empty(v, np.float32)
        for r in range(lo, hi):
            ok = True
            for t in range(k):
                row = x[t, r]
                kmax = _I(-2147483648)
                kmin = _I(2147483647)
                for c in range(v):
                    key = _key(row[c])
                    kmax = _I(max(kmax, key))
                    kmin = _I(min(kmin, key))
                if kmin < _KEY_NINF or kmax >= _KEY_PINF or kmax <= _KEY_NINF:
                    ok = False
                    break
                tops[t] = _float(_I(kmax ^ _I(_I(kmax >> _S31) & _M31)))
            if not ok:
                bad[r] = 1
                continue
            bad[r] = 0
            mr = mean[r]
            qr = m2[r]
            vr = votes[r]
            h = 0.0
            for t in range(k):
                row = x[t, r]
                top = tops[t]
                s = _F(0.0)
                d = _F(0.0)
                for c in range(v):
                    y = row[c] - top
                    ec = _exp(y)
                    e[c] = ec
                    s += ec
                    d += ec * (y if y > _LO else _F(0.0))  # -inf: 0, not 0 * -inf
                first = 0
                while row[first] != top:  # the first index of the max (a vectorised
                    first += 1  # min-index reduction would stop the exp loop's vectorising)
                vr[first] += 1
                inv = _F(1.0) / s
                h += max(0.0, math.log(s) - d * inv)
                w = _F(1.0) / _F(t + 1)
                if keep:
                    o = out[t, r]
                    for c in range(v):
                        o[c] = e[c] * inv
                if t == 0:
                    for c in range(v):
                        mr[c] = e[c] * inv
                        qr[c] = _F(0.0)
                else:
                    for c in range(v):
                        p = e[c] * inv
                        delta = p - mr[c]
                        mr[c] += delta * w
                        qr[c] += delta * (p - mr[c])
            entropy[r] = h


def fold(x, out, mean, m2, entropy, votes, bad) -> None:
    """Fold float32 logits ``x`` ``(k, R, V)`` (numpy, C-contiguous) into ``mean``, ``m2``
    ``(R, V)``, ``entropy`` ``(R,)``, the int32 ``votes`` ``(R, V)`` and, unless ``out`` is
    None, the probabilities ``out`` ``(k, R, V)`` (may be ``x`` itself). ``bad`` ``(R,)``
    uint8 flags the rows left to the caller (NaN, ``+inf`` or all ``-inf``)."""
    keep = out is not None
    _fold_rows(x, out if keep else x, keep, mean, m2, entropy, votes, bad, 0, x.shape[1])
