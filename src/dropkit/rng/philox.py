"""Philox-4x32-10 in plain NumPy, and dropkit's counter-based mask specification.

Philox is the counter-based generator of Salmon, Moraes, Dror & Shaw 2011, "Parallel random
numbers: as easy as 1, 2, 3" (SC'11): a keyed bijection of a 128-bit counter, so the random
words for any position are computed directly, in any order, on any device.

The mask specification (the same for this reference, the numba CPU kernel and the Triton GPU
kernel, bit for bit):

* **key**: the 64-bit ``seed`` split as ``(seed mod 2^32, seed >> 32)``;
* **stream position** of element ``i`` of the row-major flattened tensor: ``j = offset + i``
  (64-bit);
* **counter** of position ``j``: ``(q mod 2^32, q >> 32, stream, 0)`` with ``q = j >> 2``, so
  four consecutive positions share one Philox call and position ``j`` takes output word
  ``j & 3`` ("interleaved": one call serves 4 adjacent elements);
* **keep decision**: ``word >= threshold(p)`` compared as unsigned 32-bit integers, with
  ``threshold(p) = min(round(p * 2^32), 2^32 - 1)`` for ``p < 1`` (P(keep) = 1 - p to within
  2^-33) and everything dropped at ``p = 1``;
* **uniform** in [0, 1): ``word * 2^-32`` (float64 here);
* **normal** (Gaussian dropout): Box-Muller on the pair of words ``(w0, w1)`` or ``(w2, w3)``
  of the call: ``u1 = (w_even + 1) * 2^-32`` in (0, 1], ``u2 = w_odd * 2^-32``,
  ``z = sqrt(-2 ln u1) * cos(2 pi u2)`` for the even position and ``sin`` for the odd one.

Because the decision for position ``j`` depends only on ``(seed, stream, j, p)``, dropping rows
``a:b`` of a tensor with ``offset + a * row_size`` gives exactly rows ``a:b`` of dropping the
whole tensor: sharding-invariant by construction.
"""

from __future__ import annotations

import numpy as np

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
TWO32 = 2.0**32


def philox4x32(
    counter: np.ndarray, key: tuple[int, int] | np.ndarray, rounds: int = 10
) -> np.ndarray:
    """Philox-4x32-R of ``counter`` (``(..., 4)`` uint32 words) under ``key`` (two uint32 words).

    Each round: ``(hi0, lo0) = M0 * c0``, ``(hi1, lo1) = M1 * c2`` (32x32 -> 64-bit products),
    ``c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)``; the key is bumped by the Weyl constants
    ``(W0, W1)`` before every round after the first. Returns ``(..., 4)`` uint32.
    Arithmetic is done in uint64 and masked to 32 bits, which keeps the products exact.
    """
    c = np.asarray(counter, dtype=np.uint64) & MASK32
    k0, k1 = (np.uint64(int(k) & 0xFFFFFFFF) for k in key)
    c0, c1, c2, c3 = (c[..., i] for i in range(4))
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _check_seed(seed: int, offset: int, stream: int) -> None:
    for name, value, bits in (("seed", seed, 64), ("offset", offset, 64), ("stream", stream, 32)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 0 <= int(value) < 2**bits:
            raise ValueError(f"{name} must be in [0, 2^{bits}), got {value}")


def random_words(seed: int, offset: int, n: int, *, stream: int = 0) -> np.ndarray:
    """The 32-bit word of stream positions ``offset .. offset + n - 1`` (uint32, shape ``(n,)``).

    Position ``j`` uses counter ``(j >> 2 split in two 32-bit words, stream, 0)`` and output word
    ``j & 3`` of that Philox call.
    """
    _check_seed(seed, offset, stream)
    return _words_at(seed, np.uint64(offset) + np.arange(n, dtype=np.uint64), stream)


def keep_threshold(p: float) -> int:
    """Unsigned 32-bit threshold: a position is kept iff its word >= this (for p < 1)."""
    return min(round(p * TWO32), 2**32 - 1)


def keep_mask(
    seed: int, offset: int, shape: tuple[int, ...], p: float, *, stream: int = 0
) -> np.ndarray:
    """Bool keep mask of ``shape`` (True = kept) for stream positions ``offset + i``."""
    n = int(np.prod(shape, dtype=np.int64))
    if p >= 1.0:
        _check_seed(seed, offset, stream)
        return np.zeros(shape, dtype=bool)
    words = random_words(seed, offset, n, stream=stream)
    return (words.astype(np.uint64) >= np.uint64(keep_threshold(p))).reshape(shape)


def uniform(seed: int, offset: int, shape: tuple[int, ...], *, stream: int = 0) -> np.ndarray:
    """Uniforms in [0, 1) (float64): ``word * 2^-32``."""
    n = int(np.prod(shape, dtype=np.int64))
    return (random_words(seed, offset, n, stream=stream) / TWO32).reshape(shape)


def normal(seed: int, offset: int, shape: tuple[int, ...], *, stream: int = 0) -> np.ndarray:
    """Standard normals (float64) by Box-Muller on the word pairs of each Philox call."""
    _check_seed(seed, offset, stream)
    n = int(np.prod(shape, dtype=np.int64))
    j = np.uint64(offset) + np.arange(n, dtype=np.uint64)
    lane = j & np.uint64(3)
    pair_start = j - (lane & np.uint64(1))  # the even position of the pair (w0,w1) or (w2,w3)
    even = _words_at(seed, pair_start, stream)
    odd = _words_at(seed, pair_start + np.uint64(1), stream)
    radius = np.sqrt(-2.0 * np.log((even.astype(np.float64) + 1.0) / TWO32))
    angle = 2.0 * np.pi * (odd.astype(np.float64) / TWO32)
    z = np.where((lane & np.uint64(1)) == 0, radius * np.cos(angle), radius * np.sin(angle))
    return z.reshape(shape)


def _words_at(seed: int, positions: np.ndarray, stream: int) -> np.ndarray:
    """The word of each stream position (uint64 array) under ``seed`` and ``stream``."""
    q = positions >> np.uint64(2)
    counter = np.stack(
        [q & MASK32, q >> np.uint64(32), np.full_like(q, stream), np.zeros_like(q)], axis=-1
    )
    words = philox4x32(counter, (seed & 0xFFFFFFFF, seed >> 32))
    lane = (positions & np.uint64(3)).astype(np.intp)
    return np.take_along_axis(words, lane[:, None], axis=1)[:, 0]
