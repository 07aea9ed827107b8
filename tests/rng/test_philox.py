"""The Philox-4x32-10 NumPy reference and dropkit's written mask specification."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropkit.rng import keep_mask, keep_threshold, normal, philox4x32, random_words, uniform
from tests.stats import assert_binomial, assert_within

M32 = 0xFFFFFFFF
TWO32 = 2**32

# Random123 known-answer vectors (kat_vectors, philox4x32 10 rounds): counter c0..c3, key k0 k1.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_py(counter: tuple[int, ...], key: tuple[int, int]) -> tuple[int, ...]:
    """Independent pure-Python Philox-4x32-10 (Salmon et al. 2011), for the hand checks."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32
    return c0, c1, c2, c3


def word_by_hand(seed: int, position: int, stream: int = 0) -> int:
    """Spec: counter ((j >> 2) lo, (j >> 2) hi, stream, 0), key (seed lo, seed hi), word j & 3."""
    q = position >> 2
    return philox_py((q & M32, q >> 32, stream, 0), (seed & M32, seed >> 32))[position & 3]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_known_answer_vectors(counter, key, expected):
    """philox4x32 (10 rounds) reproduces the Random123 known-answer vectors."""
    out = philox4x32(np.array(counter, dtype=np.uint32), key)
    assert out.dtype == np.uint32
    assert tuple(int(w) for w in out) == expected
    assert philox_py(counter, key) == expected  # the hand implementation used below is right too


def test_known_answer_vectors_batched():
    """A (2, 3, 4) batch of counters is transformed row by row, key broadcast to every row."""
    counter, key, expected = KAT[2]
    out = philox4x32(np.tile(np.array(counter, dtype=np.uint32), (2, 3, 1)), key)
    assert out.shape == (2, 3, 4)
    assert (out == np.array(expected, dtype=np.uint32)).all()


@pytest.mark.parametrize("seed", [0, 1, 0xDEADBEEF, 2**32 + 5, 2**63 + 11, 2**64 - 1])
@pytest.mark.parametrize("offset", [0, 1, 6, 2**32 + 3, 2**34 + 5, 2**40 + 2, 2**63 + 9])
@pytest.mark.parametrize("stream", [0, 7])
def test_random_words_follow_the_mapping(seed, offset, stream):
    """random_words(seed, offset, n)[i] is word (offset+i)&3 at counter (q lo, q hi, stream, 0)."""
    n = 9
    words = random_words(seed, offset, n, stream=stream)
    assert words.dtype == np.uint32
    assert words.shape == (n,)
    assert [int(w) for w in words] == [word_by_hand(seed, offset + i, stream) for i in range(n)]


def test_counter_hi_word_is_used():
    """Positions 2^34 apart (same low counter word, different high word) get different words."""
    low = random_words(3, 8, 64)
    high = random_words(3, 8 + 2**34, 64)
    assert (low != high).sum() > 60


def test_seed_hi_word_is_used():
    """Seeds that differ only above bit 32 give different words."""
    assert (random_words(5, 0, 64) != random_words(5 + 2**32, 0, 64)).sum() > 60


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.0, 0),
        (2.0**-32, 1),
        (0.1, 429496730),
        (0.25, 2**30),
        (0.5, 2**31),
        (0.75, 3 * 2**30),
        (0.999, 4290672329),
        (1.0 - 2.0**-40, 2**32 - 1),
        (1.0, 2**32 - 1),
    ],
)
def test_keep_threshold(p, expected):
    """keep_threshold(p) = min(round(p * 2^32), 2^32 - 1)."""
    assert keep_threshold(p) == expected
    assert keep_threshold(p) == min(round(p * TWO32), TWO32 - 1)


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5), (2, 3, 4)])
def test_keep_mask_p0_keeps_all_and_p1_drops_all(shape):
    """p = 0 keeps every element and p = 1 drops every element, with the requested shape."""
    kept = keep_mask(11, 3, shape, 0.0)
    dropped = keep_mask(11, 3, shape, 1.0)
    assert kept.shape == dropped.shape == shape
    assert kept.dtype == dropped.dtype == np.bool_
    assert kept.all()
    assert not dropped.any()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_is_the_unsigned_threshold_decision(p):
    """keep_mask[i] is word(offset + i) >= keep_threshold(p), compared as unsigned integers."""
    seed, offset = 2**40 + 1, 2**33 + 1
    words = [word_by_hand(seed, offset + i) for i in range(24)]
    mask = keep_mask(seed, offset, (4, 6), p)
    assert mask.ravel().tolist() == [w >= keep_threshold(p) for w in words]


@pytest.mark.parametrize("p", [1e-3, 0.1, 0.5, 0.9, 0.999])
def test_keep_fraction_is_binomial(p):
    """The number of kept elements of 2^20 is Binomial(2^20, 1 - p)."""
    n = 2**20
    mask = keep_mask(1234, 2**35 + 3, (n,), p)
    assert_binomial(int(mask.sum()), n, 1.0 - p, f"kept at p={p}")


def test_uniform():
    """uniform is word * 2^-32: in [0, 1), mean 1/2 and variance 1/12."""
    n = 2**20
    u = uniform(99, 5, (n,))
    assert u.dtype == np.float64
    assert np.array_equal(u, random_words(99, 5, n) / TWO32)
    assert u.min() >= 0.0
    assert u.max() < 1.0
    assert_within(u.mean(), 0.5, math.sqrt(1 / 12 / n), "uniform mean")
    assert_within(u.var(), 1 / 12, math.sqrt(1 / 180 / n), "uniform variance")


def test_normal_moments():
    """normal has mean 0 and variance 1 (sd of the estimators 1/sqrt(n) and sqrt(2/n))."""
    n = 2**20
    z = normal(7, 3, (n,))
    assert z.dtype == np.float64
    assert np.isfinite(z).all()
    assert_within(z.mean(), 0.0, 1 / math.sqrt(n), "normal mean")
    assert_within(z.var(), 1.0, math.sqrt(2 / n), "normal variance")


@pytest.mark.parametrize("seed", [0, 2**33 + 17])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 2**32 + 1, 2**34 + 6])
def test_normal_is_box_muller_by_hand(seed, offset):
    """Pairs (w0, w1), (w2, w3): z = sqrt(-2 ln((w_even + 1) 2^-32)) cos/sin(2 pi w_odd 2^-32)."""
    z = normal(seed, offset, (2, 3))
    for i, value in enumerate(z.ravel()):
        j = offset + i
        even = j - (j & 1)
        w_even, w_odd = word_by_hand(seed, even), word_by_hand(seed, even + 1)
        radius = math.sqrt(-2.0 * math.log((w_even + 1.0) / TWO32))
        angle = 2.0 * math.pi * (w_odd / TWO32)
        expected = radius * (math.cos(angle) if j % 2 == 0 else math.sin(angle))
        assert value == pytest.approx(expected, rel=1e-14, abs=1e-15), (i, j)


@pytest.mark.parametrize(
    ("offset", "a", "b", "rows", "row"),
    [
        (0, 0, 3, 10, 7),
        (0, 3, 8, 10, 7),
        (5, 1, 2, 4, 1),
        (2**33 + 3, 2, 9, 9, 13),
        (1, 4, 4, 6, 5),
    ],
)
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_sharding_invariance(offset, a, b, rows, row, p):
    """keep_mask(seed, offset + a*row, (b-a, row)) == keep_mask(seed, offset, (N, row))[a:b]."""
    whole = keep_mask(77, offset, (rows, row), p)
    shard = keep_mask(77, offset + a * row, (b - a, row), p)
    assert shard.shape == (b - a, row)
    assert np.array_equal(shard, whole[a:b])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"seed": 1}, {"seed": 2}),
        ({"seed": 1}, {"seed": 1 + 2**32}),
        ({"seed": 1, "stream": 0}, {"seed": 1, "stream": 1}),
        ({"seed": 1, "offset": 0}, {"seed": 1, "offset": 4096}),
    ],
)
def test_different_keys_give_independent_masks(first, second):
    """Different seeds, streams or offsets give masks that agree only by chance (p = 1/2)."""
    n = 2**16

    def mask(seed, stream=0, offset=0):
        return keep_mask(seed, offset, (n,), 0.5, stream=stream)

    disagree = int((mask(**first) != mask(**second)).sum())
    assert_binomial(disagree, n, 0.5, "positions where the two masks differ")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"seed": -1}, ValueError),
        ({"seed": 2**64}, ValueError),
        ({"seed": 1.0}, TypeError),
        ({"seed": True}, TypeError),
        ({"seed": "1"}, TypeError),
        ({"offset": -1}, ValueError),
        ({"offset": 2**64}, ValueError),
        ({"offset": 0.5}, TypeError),
        ({"stream": -1}, ValueError),
        ({"stream": 2**32}, ValueError),
    ],
)
@pytest.mark.parametrize("fn", ["random_words", "keep_mask", "keep_mask_p1", "uniform", "normal"])
def test_bad_seed_offset_stream_raise(kwargs, error, fn):
    """Negative, too large or non-int seed/offset/stream raise ValueError/TypeError everywhere."""
    args = {"seed": 1, "offset": 0, "stream": 0, **kwargs}
    name = next(k for k in kwargs)
    calls = {
        "random_words": lambda: random_words(
            args["seed"], args["offset"], 4, stream=args["stream"]
        ),
        "keep_mask": lambda: keep_mask(
            args["seed"], args["offset"], (4,), 0.5, stream=args["stream"]
        ),
        "keep_mask_p1": lambda: keep_mask(
            args["seed"], args["offset"], (4,), 1.0, stream=args["stream"]
        ),
        "uniform": lambda: uniform(args["seed"], args["offset"], (4,), stream=args["stream"]),
        "normal": lambda: normal(args["seed"], args["offset"], (4,), stream=args["stream"]),
    }
    with pytest.raises(error, match=name):
        calls[fn]()


def test_numpy_integer_seed_and_offset_accepted():
    """NumPy integer seeds and offsets are accepted and equal to the Python-int result."""
    expected = random_words(2**40 + 1, 2**33, 8)
    assert np.array_equal(random_words(np.uint64(2**40 + 1), np.int64(2**33), 8), expected)
