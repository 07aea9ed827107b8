"""Every Philox backend computes the NumPy reference's masks bit for bit (the "torch" one aside)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import dropkit.functional as F
from dropkit.rng import backend as rng_backend
from dropkit.rng import cpu, keep_mask, ops, random_words
from tests.stats import assert_binomial

SEED = 2**45 + 7
SHAPES = [(0,), (1,), (3,), (4,), (7,), (3, 5), (2, 3, 5), (64, 33)]
OFFSETS = [0, 1, 2, 3, 2**32 + 3, 2**40]
PS = [0.0, 0.1, 0.5, 0.9, 1.0]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA GPU and triton"
)


def make_input(shape, dtype, device="cpu"):
    gen = torch.Generator().manual_seed(31 * sum(shape) + len(shape))
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(device)


def expected_dropout(x, p, seed, offset):
    """where(reference mask, x * scale, 0) computed in x's dtype (on the CPU)."""
    x = x.cpu()
    keep = torch.from_numpy(keep_mask(seed, offset, tuple(x.shape), p))
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype))


def reference_words(seed, offset, n):
    return torch.from_numpy(random_words(seed, offset, n).astype(np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("shape", SHAPES)
def test_dropout_numba_equals_reference(shape, offset, p, dtype):
    """functional.dropout: numba == reference == where(NumPy mask, x * scale, 0), bit for bit."""
    x = make_input(shape, dtype)
    expected = expected_dropout(x, p, SEED, offset)
    for backend in ("numba", "reference"):
        out = F.dropout(x, p, seed=SEED, offset=offset, backend=backend)
        assert out.dtype == dtype
        assert out.shape == x.shape
        assert torch.equal(out, expected), backend


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("n", [0, 1, 5, 130])
def test_philox_dropout_op_backends(n, offset, dtype):
    """The custom op dropkit::philox_dropout agrees across numba/reference with the NumPy mask."""
    x = make_input((n,), dtype)
    seed = torch.tensor(SEED)
    p = 0.3
    expected = expected_dropout(x, p, SEED, offset)
    for backend in ("numba", "reference"):
        out = ops.philox_dropout(x, seed, offset, p, 1.0 / (1.0 - p), backend)
        assert torch.equal(out, expected), backend


@pytest.mark.parametrize("offset", [*OFFSETS, 2**61 + 1])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 17, 1000])
@pytest.mark.parametrize("seed", [0, 5, 2**32 + 1, 2**63 - 1])
def test_philox_words_op_backends(seed, n, offset):
    """dropkit::philox_words on numba and reference equals random_words (as int64)."""
    expected = reference_words(seed, offset, n)
    for backend in ("numba", "reference"):
        out = ops.philox_words(torch.tensor(seed), offset, n, torch.device("cpu"), backend)
        assert out.dtype == torch.int64
        assert torch.equal(out, expected), backend


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0, 3, 2**32 + 3])
@pytest.mark.parametrize("shape", [(1,), (5, 3), (4, 7, 9)])
def test_bias_dropout_add_numba_equals_reference(shape, offset, dtype):
    """The fused numba bias_dropout_add equals residual + where(NumPy mask, (x + b) * scale, 0)."""
    x, r = make_input(shape, dtype), make_input((*shape, 1), dtype).view(shape)
    b = make_input(shape[-1:], dtype)
    p = 0.4
    expected = r + expected_dropout(x + b, p, SEED, offset)
    for backend in ("numba", "reference"):
        out = F.bias_dropout_add(x, b, r, p, seed=SEED, offset=offset, backend=backend)
        assert torch.equal(out, expected), backend


@pytest.mark.parametrize("backend", ["numba", "reference", None])
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 1, 5), (2, 3, 4)])
def test_bernoulli_mask_equals_keep_mask(shape, offset, p, backend):
    """functional.bernoulli_mask(shape, p, seed, offset) equals dropkit.rng.keep_mask."""
    out = F.bernoulli_mask(shape, p, seed=SEED, offset=offset, backend=backend)
    assert out.dtype == torch.bool
    assert torch.equal(out, torch.from_numpy(keep_mask(SEED, offset, shape, p)))


def test_torch_backend_reproducible_per_seed_and_binomial():
    """backend="torch": same seed, same output; other seed, other mask; keep fraction binomial."""
    n, p = 2**18, 0.3
    x = torch.ones(n)
    a = F.dropout(x, p, seed=11, backend="torch")
    b = F.dropout(x, p, seed=11, backend="torch")
    c = F.dropout(x, p, seed=12, backend="torch")
    assert torch.equal(a, b)
    assert_binomial(int((a != c).sum()), n, 2 * p * (1 - p), "positions where seeds 11, 12 differ")
    assert_binomial(int((a != 0).sum()), n, 1 - p, "kept by the torch backend")
    assert torch.equal(a[a != 0], torch.full_like(a[a != 0], 1 / (1 - p)))


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [*SHAPES, (3, 4097)])
def test_triton_dropout_equals_reference(shape, dtype):  # pragma: no cover - GPU only
    """On CUDA, the Triton dropout and masks equal the NumPy-reference ones bit for bit."""
    x = make_input(shape, dtype, "cuda")
    for offset in OFFSETS:
        for p in PS:
            out = F.dropout(x, p, seed=SEED, offset=offset, backend="triton")
            assert out.device.type == "cuda"
            assert torch.equal(out.cpu(), expected_dropout(x, p, SEED, offset)), (offset, p)
            mask = F.bernoulli_mask(
                shape, p, seed=SEED, offset=offset, device="cuda", backend="triton"
            )
            expected = torch.from_numpy(keep_mask(SEED, offset, shape, p))
            assert torch.equal(mask.cpu(), expected), (offset, p)


@needs_cuda
@pytest.mark.parametrize("offset", [*OFFSETS, 2**61 + 1])
@pytest.mark.parametrize("n", [0, 1, 5, 1023, 1025, 5000])
def test_triton_words_equal_reference(n, offset):  # pragma: no cover - GPU only
    """On CUDA, dropkit::philox_words (Triton) equals random_words."""
    seed = torch.tensor(SEED)
    out = ops.philox_words(seed, offset, n, torch.device("cuda"), "triton")
    assert torch.equal(out.cpu(), reference_words(SEED, offset, n))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset", [0, 3, 2**32 + 3])
def test_triton_bias_dropout_add(offset, dtype):  # pragma: no cover - GPU only
    """On CUDA, bias_dropout_add drops exactly the reference positions (values to rounding)."""
    shape, p = (33, 65), 0.4
    x, b = make_input(shape, dtype, "cuda"), make_input(shape[-1:], dtype, "cuda")
    r = make_input((*shape, 1), dtype, "cuda").view(shape)
    out = F.bias_dropout_add(x, b, r, p, seed=SEED, offset=offset, backend="triton").cpu()
    keep = torch.from_numpy(keep_mask(SEED, offset, shape, p))
    expected = r.cpu() + torch.where(keep, (x + b).cpu() / (1 - p), 0)
    assert torch.equal(out[~keep], r.cpu()[~keep])
    torch.testing.assert_close(out, expected)


INTERPRETER_SNIPPET = textwrap.dedent(
    """
    import numpy as np
    import torch
    from dropkit.rng import gpu, keep_mask, random_words
    from dropkit.rng.ops import threshold

    seed = 2**40 + 12345
    for dtype in (torch.float32, torch.float64, torch.float16):
        cases = [(1, 0, 0.5), (37, 3, 0.3), (1000, 2**32 + 3, 0.9), (4099, 2**40 + 1, 0.1)]
        for n, offset, p in cases:
            gen = torch.Generator().manual_seed(n)
            x, r = torch.randn(2, n, generator=gen, dtype=torch.float64).to(dtype)
            b = torch.randn(1, generator=gen, dtype=torch.float64).to(dtype)
            keep = torch.from_numpy(keep_mask(seed, offset, (n,), p))
            scale = 1.0 / (1.0 - p)
            # fp32 arithmetic (fp64 in fp64), one rounding to the input dtype at the end
            wide = torch.float64 if dtype == torch.float64 else torch.float32
            xw, rw, bw = x.to(wide), r.to(wide), b.to(wide)
            expected = torch.where(keep, xw * scale, 0).to(dtype)
            out = gpu.masked_scale(x, torch.empty_like(x), seed, offset, 0, threshold(p), scale)
            assert torch.equal(out, expected), ("masked_scale", dtype, n, offset, p)
            assert torch.equal(out, torch.where(keep, x * scale, 0)), ("torch rounding", dtype)
            expected = (rw + torch.where(keep, (xw + bw) * scale, 0)).to(dtype)
            out = gpu.bias_dropout_add(x, b, r, seed, offset, threshold(p), scale)
            assert torch.equal(out, expected), ("bias_dropout_add", dtype, n, offset, p)
            words = gpu.words(n, seed, offset, 0, "cpu")
            reference = torch.from_numpy(random_words(seed, offset, n).astype(np.int64))
            assert torch.equal(words, reference), ("words", n, offset)
    # bfloat16: numpy has no bf16, so Triton's interpreter rounds fp32 -> bf16 by truncation
    # where the GPU rounds to nearest even. The dropped positions must match exactly; kept
    # values may differ by at most one bf16 ulp (2^-7 relative).
    for n, offset, p in [(37, 3, 0.3), (4099, 2**40 + 1, 0.1)]:
        x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(torch.bfloat16)
        keep = torch.from_numpy(keep_mask(seed, offset, (n,), p))
        scale = 1.0 / (1.0 - p)
        out = gpu.masked_scale(x, torch.empty_like(x), seed, offset, 0, threshold(p), scale)
        expected = torch.where(keep, x.float() * scale, 0)
        assert torch.equal(out[~keep], torch.zeros_like(out[~keep])), ("bf16 zeros", n)
        assert torch.equal(out[keep] != 0, expected[keep] != 0), ("bf16 kept", n)
        err = (out.float() - expected).abs()
        assert bool((err <= expected.abs() * 2.0**-7).all()), ("bf16 values", n, err.max())
    print("triton interpreter: all equal")
    """
)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (needed for its interpreter)")
def test_triton_kernels_in_interpreter():  # pragma: no cover - needs triton
    """The Triton kernels, run by Triton's interpreter on CPU tensors, match the NumPy reference."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", INTERPRETER_SNIPPET],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "all equal" in result.stdout


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_unknown_backend_raises(device):
    """An unknown backend name raises ValueError listing the allowed ones."""
    with pytest.raises(ValueError, match=r"reference.*numba.*triton.*torch"):
        rng_backend.resolve(torch.device(device), "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        F.dropout(torch.ones(3), 0.5, seed=1, backend="philox")


@pytest.mark.parametrize(("backend", "device"), [("numba", "meta"), ("triton", "cpu")])
def test_backend_on_wrong_device_raises(backend, device):
    """numba on a non-CPU tensor, or triton on a non-CUDA tensor, raises ValueError."""
    allowed = {"numba": "CPU", "triton": "CUDA"}[backend]
    with pytest.raises(ValueError, match=f"runs on {allowed} tensors, got a {device} tensor"):
        rng_backend.resolve(torch.device(device), backend)
    with pytest.raises(ValueError, match=allowed):
        F.dropout(torch.ones(3, device=device), 0.5, seed=1, backend=backend)


def test_missing_numba_falls_back_to_reference_once(monkeypatch):
    """Without numba, CPU resolves to "reference" with one RuntimeWarning; masks are unchanged."""
    x = make_input((5, 37), torch.float32)
    before = F.dropout(x, 0.3, seed=SEED, offset=3)
    monkeypatch.setattr(rng_backend, "numba_available", lambda: False)
    monkeypatch.setattr(rng_backend, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = rng_backend.resolve(torch.device("cpu"), None)
        second = rng_backend.resolve(torch.device("cpu"), None)
        after = F.dropout(x, 0.3, seed=SEED, offset=3)
    assert first == second == "reference"
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "numba" in str(caught[0].message)
    assert torch.equal(after, before)
    with pytest.raises(RuntimeError, match="needs numba"):
        rng_backend.resolve(torch.device("cpu"), "numba")


def test_non_cpu_device_does_not_claim_numba_is_missing(monkeypatch):
    """A device without a Philox kernel uses torch's generator and never claims numba is
    missing; meta tensors (no kernel ever runs) warn nothing at all."""
    assert cpu.AVAILABLE
    monkeypatch.setattr(rng_backend, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen = rng_backend.resolve(torch.device("meta"), None)
    assert chosen == "torch"
    messages = [str(w.message) for w in caught]
    assert messages == [], messages


def test_torch_backend_mixes_the_offset_into_its_seed():
    """The "torch" fallback cannot skip ahead, but different offsets must not repeat a mask."""
    x = torch.ones(4096)
    a = F.dropout(x, 0.5, seed=1, offset=0, backend="torch")
    b = F.dropout(x, 0.5, seed=1, offset=4, backend="torch")
    assert torch.equal(a, F.dropout(x, 0.5, seed=1, offset=0, backend="torch"))
    assert not torch.equal(a, b)


ELEMS_PER_BLOCK = 4 * cpu.BLOCK
BLOCK_SIZES = [ELEMS_PER_BLOCK - 1, ELEMS_PER_BLOCK, ELEMS_PER_BLOCK + 1, 3 * ELEMS_PER_BLOCK + 5]
BLOCK_OFFSETS = [0, 1, 3, ELEMS_PER_BLOCK - 2, 2**32 + 3]


@pytest.mark.parametrize("offset", BLOCK_OFFSETS)
@pytest.mark.parametrize("n", BLOCK_SIZES)
def test_numba_kernels_across_block_edges(n, offset):
    """Tensors spanning several numba blocks, starting mid-call and mid-block: words and the
    masked rescale still equal the reference at every element."""
    assert torch.equal(
        ops.philox_words(torch.tensor(SEED), offset, n, torch.device("cpu"), "numba"),
        reference_words(SEED, offset, n),
    )
    x = make_input((n,), torch.float32)
    out = F.dropout(x, 0.3, seed=SEED, offset=offset, backend="numba")
    assert torch.equal(out, expected_dropout(x, 0.3, SEED, offset))


@pytest.mark.parametrize("hidden", [1, 3, ELEMS_PER_BLOCK - 1, ELEMS_PER_BLOCK + 7])
@pytest.mark.parametrize("offset", [0, 3, ELEMS_PER_BLOCK - 2])
def test_bias_dropout_add_numba_across_block_edges(hidden, offset):
    """The fused kernel walks bias rows per block: rows that straddle blocks, rows shorter
    than a Philox call and rows longer than a block all add the right bias column."""
    rows = -(-3 * ELEMS_PER_BLOCK // hidden) + 1
    x, r = make_input((rows, hidden), torch.float64), make_input((hidden, rows), torch.float64)
    r = r.T.contiguous()
    b = make_input((hidden + 1,), torch.float64)[:hidden]
    expected = r + expected_dropout(x + b, 0.4, SEED, offset)
    out = F.bias_dropout_add(x, b, r, 0.4, seed=SEED, offset=offset, backend="numba")
    assert torch.equal(out, expected)
