"""GPU kernels (Triton): Philox-4x32-10 words, dropout and bias-dropout-add.

They implement the specification of :mod:`dropkit.rng.philox` bit for bit. Each program owns
``BLOCK`` consecutive *stream positions* aligned to Philox calls: a ``[BLOCK // 4, 4]`` tile whose
row is one Philox call (counter ``(q lo, q hi, stream, 0)``) and whose column is the output word
used by that position. Loads and stores stay contiguous (the tile is row-major over positions),
and one Philox call serves four elements, which is what keeps dropout at copy speed in bf16 (one
call per element makes it compute-bound). Arithmetic is fp32 for every input dtype (fp64 in
fp64); results are rounded to the input dtype (round to nearest even), as on the CPU.
"""

from __future__ import annotations

import struct

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None

AVAILABLE = triton is not None


def _float_bits(value: float) -> int:
    """The bits of a float64 as an int64: Triton float arguments are fp32, and fp64 inputs need
    the exact 1/q (fp32 inputs then use its correctly rounded fp32 value, as the CPU does)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _grid(n: int, offset: int, block: int) -> tuple[int]:
    # Programs are aligned to Philox calls, so the first may start before element 0.
    calls = (offset + n + 3) // 4 - offset // 4
    return ((calls + block // 4 - 1) // (block // 4),)


if AVAILABLE:

    @triton.jit
    def _tile(seed, offset, n, stream, BLOCK: tl.constexpr):
        """Element indices, validity and Philox word of this program's [BLOCK/4, 4] tile."""
        pid = tl.program_id(0).to(tl.int64)
        q = (offset >> 2) + pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4).to(tl.int64)
        lane = tl.arange(0, 4)
        idx = (q * 4)[:, None] + lane[None, :] - offset
        valid = (idx >= 0) & (idx < n)
        q_lo = (q & 0xFFFFFFFF).to(tl.uint32)
        q_hi = (q >> 32).to(tl.uint32)
        c2 = tl.full(q_lo.shape, 0, tl.uint32) + stream.to(tl.uint32)
        c3 = tl.full(q_lo.shape, 0, tl.uint32)
        w0, w1, w2, w3 = tl.philox(seed, q_lo, q_hi, c2, c3, n_rounds=10)
        col = lane[None, :]
        word = tl.where(
            col == 0,
            w0[:, None],
            tl.where(col == 1, w1[:, None], tl.where(col == 2, w2[:, None], w3[:, None])),
        )
        return idx, valid, word

    @triton.jit
    def _scaled(v, scale_bits, F64: tl.constexpr):
        scale = scale_bits.to(tl.int64).to(tl.float64, bitcast=True)
        if F64:
            return v * scale
        return v.to(tl.float32) * scale.to(tl.float32)

    @triton.jit
    def _store(ptr, idx, value, valid):
        dtype = ptr.dtype.element_ty
        if dtype != value.dtype:  # round to nearest even, as torch does on the CPU
            value = value.to(dtype, fp_downcast_rounding="rtne")
        tl.store(ptr + idx, value, mask=valid)

    @triton.jit
    def _dropout_kernel(
        x_ptr,
        out_ptr,
        n,
        seed,
        offset,
        stream,
        threshold,
        scale_bits,
        BLOCK: tl.constexpr,
        F64: tl.constexpr,
    ):
        idx, valid, word = _tile(seed, offset, n, stream, BLOCK)
        keep = word >= threshold.to(tl.uint32)
        x = tl.load(x_ptr + idx, mask=valid, other=0.0, eviction_policy="evict_first")
        _store(out_ptr, idx, tl.where(keep, _scaled(x, scale_bits, F64), 0.0), valid)

    @triton.jit
    def _bias_dropout_add_kernel(
        x_ptr,
        b_ptr,
        r_ptr,
        out_ptr,
        n,
        h,
        seed,
        offset,
        stream,
        threshold,
        scale_bits,
        BLOCK: tl.constexpr,
        F64: tl.constexpr,
    ):
        idx, valid, word = _tile(seed, offset, n, stream, BLOCK)
        keep = word >= threshold.to(tl.uint32)
        x = tl.load(x_ptr + idx, mask=valid, other=0.0, eviction_policy="evict_first")
        b = tl.load(b_ptr + idx % h, mask=valid, other=0.0)
        r = tl.load(r_ptr + idx, mask=valid, other=0.0, eviction_policy="evict_first")
        if F64:
            y = r + tl.where(keep, _scaled(x + b, scale_bits, F64), 0.0)
        else:
            y = r.to(tl.float32) + tl.where(
                keep, _scaled(x.to(tl.float32) + b.to(tl.float32), scale_bits, F64), 0.0
            )
        _store(out_ptr, idx, y, valid)

    @triton.jit
    def _words_kernel(out_ptr, n, seed, offset, stream, BLOCK: tl.constexpr):
        idx, valid, word = _tile(seed, offset, n, stream, BLOCK)
        tl.store(out_ptr + idx, word.to(tl.int64), mask=valid)


def _block(element_size: int) -> int:
    return 4096 if element_size <= 2 else 2048


def masked_scale(x, out, seed: int, offset: int, stream: int, threshold: int, scale: float):
    """Dropout of contiguous CUDA ``x`` into ``out`` (p < 1; the caller handles p = 1)."""
    import torch

    n, block = x.numel(), _block(x.element_size())
    _dropout_kernel[_grid(n, offset, block)](
        x, out, n, seed, offset, stream, threshold, _float_bits(scale),
        BLOCK=block, F64=x.dtype == torch.float64, num_warps=8,
    )  # fmt: skip
    return out


def bias_dropout_add(x, bias, residual, seed: int, offset: int, threshold: int, scale: float):
    """``residual + dropout(x + bias)`` in one pass (contiguous CUDA tensors, bias ``(H,)``)."""
    import torch

    out = torch.empty_like(x)
    n, block = x.numel(), _block(x.element_size())
    _bias_dropout_add_kernel[_grid(n, offset, block)](
        x, bias, residual, out, n, bias.numel(), seed, offset, 0, threshold, _float_bits(scale),
        BLOCK=block, F64=x.dtype == torch.float64, num_warps=8,
        enable_fp_fusion=False,  # r + (x + b) * s rounded twice, as on the CPU (no FMA)
    )  # fmt: skip
    return out


def words(n: int, seed: int, offset: int, stream: int, device):
    """The Philox words of ``n`` stream positions, as an int64 CUDA tensor."""
    import torch

    out = torch.empty(n, dtype=torch.int64, device=device)
    if n:
        _words_kernel[_grid(n, offset, 1024)](out, n, seed, offset, stream, BLOCK=1024)
    return out
