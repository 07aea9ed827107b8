"""Philox dropout as PyTorch custom operators (opaque to ``torch.compile``, autograd included).

* ``dropkit::philox_dropout(x, seed, offset, p, scale, backend)``: ``where(keep, x * scale, 0)``
  with ``keep`` the Philox decision of stream position ``offset + i``. Autograd saves only the
  0-d seed tensor; backward runs the same op on the gradient, regenerating the mask (0 bytes per
  element kept between forward and backward).
* ``dropkit::philox_words(seed, offset, n, device, backend)``: the 32-bit words of ``n``
  positions (as int64), from which broadcast masks, uniforms and normals are built.
* ``dropkit::bias_dropout_add(x, bias, residual, seed, offset, p, scale, backend)``:
  ``residual + dropout(x + bias)`` in one pass; backward regenerates the mask too.

Registering them as custom ops keeps ``torch.compile`` from tracing into numba/Triton code and
from turning the regenerated mask back into a saved bool tensor.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import philox
from .kernels import cpu_kernels, gpu_kernels, loaded_cpu

_FUSED_DTYPES = (torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def threshold(p: float) -> int:
    """Unsigned keep threshold for ``p < 1`` (see :func:`dropkit.rng.philox.keep_threshold`)."""
    return philox.keep_threshold(p)


#: :func:`threshold` memoised for the eager fast paths (the same few rates come back on every
#: call); not for traced code, where ``torch.compile`` does not follow ``lru_cache``.
cached_threshold = functools.lru_cache(maxsize=1024)(philox.keep_threshold)


def _torch_generator(seed: int, offset: int, device: torch.device) -> torch.Generator:
    # Mix the offset into the seed (a 64-bit multiplicative hash): torch's generator cannot
    # skip ahead to a stream position, but different offsets must not give the same mask.
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 0x9E3779B97F4A7C15 + offset) % (2**63))
    return gen


def _words(seed: int, offset: int, n: int, device: torch.device, backend: str) -> Tensor:
    if device.type == "meta":
        return torch.empty(n, dtype=torch.int64, device=device)
    if backend == "numba":
        out = torch.empty(n, dtype=torch.uint32)
        cpu_kernels().words_kernel(out.numpy(), seed, offset, 0)
        return out.to(torch.int64)
    if backend == "triton":
        return gpu_kernels().words(n, seed, offset, 0, device)
    if backend == "torch":
        gen = _torch_generator(seed, offset, device)
        return torch.randint(0, 2**32, (n,), generator=gen, device=device, dtype=torch.int64)
    words = philox.random_words(seed, offset, n)
    return torch.from_numpy(words.astype("int64")).to(device)


@torch.library.custom_op("dropkit::philox_words", mutates_args=())
def philox_words(seed: Tensor, offset: int, n: int, device: torch.device, backend: str) -> Tensor:
    """Words of stream positions ``offset .. offset + n - 1`` as int64 values in [0, 2^32)."""
    return _words(int(seed), offset, n, torch.device(device), backend)


@philox_words.register_fake
def _(seed, offset, n, device, backend):
    return torch.empty(n, dtype=torch.int64, device=device)


#: dtypes of the numba fast path: the float kernel (None) or the half kernel on uint16 bits
#: (True for bfloat16, False for float16).
_NUMBA_KIND = {torch.float32: None, torch.float64: None, torch.bfloat16: True, torch.float16: False}


def numba_dropout(
    x: Tensor, seed: int, offset: int, thr: int, scale: float, out: Tensor | None = None
) -> Tensor:
    """The CPU fast path: ``where(keep, x * scale, 0)`` for a contiguous float CPU tensor, one
    numba pass writing a fresh output, or ``out`` (contiguous, ``x``'s shape and dtype; ``x``
    itself for an in-place call) (``thr`` the unsigned keep threshold, ``p < 1``).

    float32/float64 run the fused kernel on the data; bfloat16/float16 run the half kernel on
    their uint16 bits (``x * scale`` in float32, rounded to nearest even), so peak memory is the
    output's and no float32 copy is made. Up to ``ADDRESS_MAX`` elements, once numba has
    loaded, the kernel is called by address (:mod:`dropkit.rng.cpu`: no NumPy views, the GIL
    kept; same bits).
    """
    out = torch.empty_like(x) if out is None else out.detach()
    half = _NUMBA_KIND[x.dtype]
    n = x.numel()
    cpu = loaded_cpu()
    if cpu is not None and n <= cpu.ADDRESS_MAX:  # by address, no NumPy views (dropkit.rng.cpu)
        if half is None:
            entry = cpu.masked_scale_f32_at if x.dtype == torch.float32 else cpu.masked_scale_f64_at
            entry(x.data_ptr(), out.data_ptr(), n, seed, offset, 0, thr, scale)
        else:
            cpu.masked_scale_half_at(x.data_ptr(), out.data_ptr(), n, seed, offset, 0, thr, scale,
                                     half)  # fmt: skip
        return out
    if x.requires_grad:
        x = x.detach()
    kernels = cpu_kernels()
    if half is None:
        kernels.masked_scale_kernel(
            x.numpy().reshape(-1), out.numpy().reshape(-1), seed, offset, 0, thr, scale
        )
    else:
        kernels.masked_scale_half_kernel(
            x.view(torch.int16).numpy().view("uint16").reshape(-1),
            out.view(torch.int16).numpy().view("uint16").reshape(-1),
            seed,
            offset,
            0,
            thr,
            scale,
            half,
        )
    return out


def memory_order(x: Tensor) -> list[int] | None:
    """The permutation of ``x``'s dims that makes it contiguous (its memory order), or None
    when ``x`` is not dense: overlapping (an expanded dim, e.g. the gradient of ``sum()``) or
    with gaps. A dense ``x`` is what ``torch.empty_like`` copies the strides of."""
    strides = x.stride()
    if any(st == 0 and n > 1 for st, n in zip(strides, x.shape, strict=True)):
        return None
    order = sorted(range(x.dim()), key=lambda d: -strides[d])
    return order if x.permute(order).is_contiguous() else None


def dropout_kernel(
    x: Tensor, seed: int, offset: int, p: float, scale: float, backend: str
) -> Tensor:
    """``where(keep, x * scale, 0)`` with no autograd: the eager implementation of every path.

    The mask is indexed by the *logical* row-major index of ``x`` whatever its strides (so a
    channels_last or transposed tensor gets the mask of its contiguous copy, and sharding rows
    still reproduces the whole); the output keeps ``x``'s strides when ``x`` is dense
    (``torch.empty_like``'s ``preserve_format`` rule, as torch's dropout).
    """
    numba_ok = backend == "numba" and p < 1.0 and scale != 0.0 and x.dtype in _NUMBA_KIND
    if numba_ok and x.is_contiguous():  # checked first: this is almost every call
        return numba_dropout(x, seed, offset, cached_threshold(p), scale)
    if numba_ok and _NUMBA_KIND[x.dtype] is None and not any(x.stride()):
        # one value seen everywhere (the gradient of sum()): no contiguous copy of it
        cpu = loaded_cpu()
        n = x.numel()
        if cpu is not None and 0 < n <= cpu.ADDRESS_MAX and x.device.type == "cpu":
            out = torch.empty(x.shape, dtype=x.dtype)
            entry = cpu.masked_fill_f32_at if x.dtype == torch.float32 else cpu.masked_fill_f64_at
            entry(x.data_ptr(), out.data_ptr(), n, seed, offset, 0, cached_threshold(p), scale)
            return out
    if x.is_meta:
        return torch.empty_like(x)
    if p >= 1.0 or scale == 0.0:
        return torch.zeros_like(x)
    if not x.is_contiguous():
        dense = x.contiguous()  # logical row-major order: the mask's indexing
        out = dropout_kernel(dense, seed, offset, p, scale, backend)
        if memory_order(x) is not None:  # channels_last, transposed: keep the strides
            return torch.empty_like(x).copy_(out)
        return out  # expanded or gapped (a broadcast gradient): strides of a fresh tensor
    if x.requires_grad:
        x = x.detach()
    if backend == "triton":
        return gpu_kernels().masked_scale(
            x, torch.empty_like(x), seed, offset, 0, threshold(p), scale
        )
    # Other cases (reference, torch): the same words, applied by torch.
    keep = (_words(seed, offset, x.numel(), x.device, backend) >= threshold(p)).view(x.shape)
    return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))


@torch.library.custom_op("dropkit::philox_dropout", mutates_args=())
def philox_dropout(
    x: Tensor, seed: Tensor, offset: int, p: float, scale: float, backend: str
) -> Tensor:
    """``where(keep, x * scale, 0)``, keep = Philox decision of position ``offset + i``."""
    return dropout_kernel(x, int(seed), offset, p, scale, backend)


@philox_dropout.register_fake
def _(x, seed, offset, p, scale, backend):
    return torch.empty_like(x)


def _setup_dropout(ctx, inputs, output) -> None:
    _, seed, offset, p, scale, backend = inputs
    ctx.save_for_backward(seed)  # 8 bytes: the mask is regenerated, never stored
    ctx.args = (offset, p, scale, backend)


def _dropout_backward(ctx, grad: Tensor):
    (seed,) = ctx.saved_tensors
    return philox_dropout(grad, seed, *ctx.args), None, None, None, None, None


philox_dropout.register_autograd(_dropout_backward, setup_context=_setup_dropout)


@torch.library.custom_op("dropkit::bias_dropout_add", mutates_args=())
def bias_dropout_add(
    x: Tensor,
    bias: Tensor,
    residual: Tensor,
    seed: Tensor,
    offset: int,
    p: float,
    scale: float,
    backend: str,
) -> Tensor:
    """``residual + where(keep, (x + bias) * scale, 0)`` in one pass where a kernel exists."""
    x, residual = x.contiguous(), residual.contiguous()
    s = int(seed)
    if p >= 1.0 or scale == 0.0:
        return residual.clone()
    if backend == "numba" and x.dtype in _FUSED_DTYPES:
        out = torch.empty_like(x)
        cpu_kernels().bias_dropout_add_kernel(
            x.view(-1).numpy(),
            bias.contiguous().view(-1).numpy(),
            residual.view(-1).numpy(),
            out.view(-1).numpy(),
            s,
            offset,
            0,
            threshold(p),
            scale,
        )
        return out
    if backend == "triton":
        return gpu_kernels().bias_dropout_add(
            x, bias.contiguous(), residual, s, offset, threshold(p), scale
        )
    # Half types: compute in fp32 and round once, exactly as the Triton kernel does.
    wide = torch.float32 if x.dtype not in _FUSED_DTYPES else x.dtype
    dropped = dropout_kernel(x.to(wide) + bias.to(wide), s, offset, p, scale, backend)
    return (residual.to(wide) + dropped).to(x.dtype)


@bias_dropout_add.register_fake
def _(x, bias, residual, seed, offset, p, scale, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_bda(ctx, inputs, output) -> None:
    _, bias, _, seed, offset, p, scale, backend = inputs
    ctx.save_for_backward(seed)
    ctx.args = (offset, p, scale, backend)
    ctx.bias_shape = bias.shape


def _bda_backward(ctx, grad: Tensor):
    (seed,) = ctx.saved_tensors
    dx = philox_dropout(grad, seed, *ctx.args)
    dbias = dx.reshape(-1, *ctx.bias_shape).sum(0) if ctx.needs_input_grad[1] else None
    return dx, dbias, grad, None, None, None, None, None


bias_dropout_add.register_autograd(_bda_backward, setup_context=_setup_bda)
