"""The serial and parallel twins of each numba kernel give the same bits (masks are a pure
function of seed, offset and index), on both sides of the serial/parallel switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropkit.rng import cpu, philox, threads

pytestmark = pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba")
SIZES = [1, 4 * cpu.BLOCK + 3, threads.SERIAL_MAX, threads.SERIAL_MAX + 1, 5 * threads.SERIAL_MAX]


@pytest.mark.parametrize("offset", [0, 3, 2**32 + 1])
@pytest.mark.parametrize("n", SIZES)
def test_twins_agree_with_each_other_and_the_reference(n, offset):
    words = [np.empty(n, np.uint32) for _ in range(3)]
    cpu._words_serial(words[0], 11, offset, 0)
    cpu._words_parallel(words[1], 11, offset, 0)
    cpu.words_kernel(words[2], 11, offset, 0)
    ref = philox.random_words(11, offset, n)
    for w in words:
        assert np.array_equal(w, ref)
    x = np.random.default_rng(n).standard_normal(n)
    outs = [np.empty_like(x) for _ in range(3)]
    thr = philox.keep_threshold(0.3)
    cpu._masked_scale_serial(x, outs[0], 11, offset, 0, thr, 1 / 0.7)
    cpu._masked_scale_parallel(x, outs[1], 11, offset, 0, thr, 1 / 0.7)
    cpu.masked_scale_kernel(x, outs[2], 11, offset, 0, thr, 1 / 0.7)
    expected = np.where(ref >= thr, x * (1 / 0.7), 0.0)
    for o in outs:
        assert np.array_equal(o, expected)


def test_bias_dropout_add_twins_agree():
    n, h = 5 * threads.SERIAL_MAX, 96
    rng = np.random.default_rng(0)
    x, r, b = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(h)
    a, c = np.empty(n), np.empty(n)
    thr = philox.keep_threshold(0.4)
    cpu._bias_dropout_add_serial(x, b, r, a, 5, 7, 0, thr, 1 / 0.6)
    cpu._bias_dropout_add_parallel(x, b, r, c, 5, 7, 0, thr, 1 / 0.6)
    assert np.array_equal(a, c)


def test_thread_count_follows_torch_and_numba_setting_is_restored():
    """With torch limited to one thread the serial twin runs; numba's count is left as found."""
    import numba

    before = numba.get_num_threads()
    saved = torch.get_num_threads()
    n = 2 * threads.SERIAL_MAX
    out = np.empty(n, np.uint32)
    try:
        torch.set_num_threads(1)
        cpu.words_kernel(out, 3, 0, 0)
    finally:
        torch.set_num_threads(saved)
    assert np.array_equal(out, philox.random_words(3, 0, n))
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("n", [5, 4 * cpu.BLOCK + 3, threads.SERIAL_MAX + 1])
def test_half_and_scaled_keep_twins_agree_with_the_reference(n):
    """The bfloat16/float16 kernel (uint16 bits) and the shared-mask fill give the reference's
    keep decisions on both twins: kept values are ``x * scale`` in float32 rounded once."""
    offset, thr, scale = 6, philox.keep_threshold(0.3), 1 / 0.7
    keep = philox.random_words(11, offset, n) >= thr
    x32 = torch.randn(n)
    for dtype, is_bf16 in ((torch.bfloat16, True), (torch.float16, False)):
        x = x32.to(dtype)
        bits = x.view(torch.int16).numpy().view(np.uint16)
        expected = torch.where(torch.from_numpy(keep), x.float() * np.float32(scale), 0.0)
        expected = expected.to(dtype).view(torch.int16).numpy()
        for kernel in (cpu._masked_scale_half_serial, cpu._masked_scale_half_parallel):
            out = np.empty_like(bits)
            kernel(bits, out, 11, offset, 0, thr, scale, is_bf16)
            assert np.array_equal(out.view(np.int16), expected)
    for kernel in (cpu._scaled_keep_serial, cpu._scaled_keep_parallel):
        out = np.empty(n, np.float32)
        kernel(out, 11, offset, 0, thr, scale)
        assert np.array_equal(out, np.where(keep, np.float32(scale), np.float32(0)))
