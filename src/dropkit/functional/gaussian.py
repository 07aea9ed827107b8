"""Gaussian (multiplicative) dropout.

Srivastava et al. 2014 (JMLR 15), section 10; Wang & Manning 2013, "Fast dropout training".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.autograd.forward_ad as _fwd_ad

from dropkit.rng.backend import draw_key, resolve
from dropkit.rng.kernels import cpu_kernels, loaded_cpu, numba_available

from ._validation import check_input, check_p, plain_call
from .mask import batch_first, random_words, resolve_seed

_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_dispatch_modes = torch._C._len_torch_dispatch_stack
_is_batched = torch._C._functorch.is_batchedtensor
_grad_enabled = torch.is_grad_enabled
_SingleLevel = torch.autograd.function._SingleLevelFunction
#: dtypes of the fused CPU kernel: the float kernel (None) or the half kernel on uint16 bits
#: (True for bfloat16, False for float16).
_KERNEL_KIND = {
    torch.float32: None,
    torch.float64: None,
    torch.bfloat16: True,
    torch.float16: False,
}


def standard_normal(
    shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Standard normals (float64) by Box-Muller on the Philox stream.

    Positions ``2k`` and ``2k + 1`` share the words :math:`(w_{2k}, w_{2k+1})`:
    :math:`u_1 = (w_{2k} + 1)\,2^{-32} \in (0, 1]`, :math:`u_2 = w_{2k+1} 2^{-32}`,
    :math:`z_{2k} = \sqrt{-2 \ln u_1} \cos 2\pi u_2`, :math:`z_{2k+1} = \sqrt{-2 \ln u_1} \sin
    2\pi u_2` (Box & Muller 1958); element ``i`` takes position ``offset + i``, as
    :func:`dropkit.rng.normal`.

    On the CPU (numba backend, eager) the values come from the kernel
    :func:`dropkit.rng.cpu.normal_kernel`, which evaluates the formula in float64 with
    fdlibm's logarithm, sine and cosine written in exactly rounded IEEE operations (no fused
    multiply-adds): the same bits wherever numba runs and in its NumPy twin, and the noise that
    :func:`gaussian_dropout`'s fused kernel applies. Elsewhere (other backends and devices,
    traced code) the formula runs as torch ops with torch's ``log``/``cos``/``sin``. The two
    evaluations, and NumPy's (:func:`dropkit.rng.normal`), agree to a few units in the last
    place of float64 (absolute difference below 1e-14; torch's and NumPy's own ``log``/``cos``
    differ from each other in the last bit too; the kernel's values are the closer to the exact
    ones, within 4 ulps). Rounded to float32, bfloat16 or float16 they agree exactly but for a
    value within that distance of a rounding boundary (of order 1e-8 per value; none among the
    2^20 positions per dtype and rate that the tests compare).
    """
    shape = tuple(int(n) for n in shape)
    n = math.prod(shape)
    start = offset - offset % 2  # pairs begin at even positions
    count = (offset + n + 1) // 2 * 2 - start
    dev = torch.device("cpu" if device is None else device)
    if (
        dev.type == "cpu"
        and _NUMBA
        and not _is_compiling()
        and not _dispatch_modes()
        and resolve(dev, backend) == "numba"
    ):
        # The seed is drawn as random_words would draw it (the same positions counted).
        seed_t, first = resolve_seed(seed, start, generator, count)
        if not _is_batched(seed_t):  # a per-entry seed under vmap: the torch ops below
            z = torch.empty(shape, dtype=torch.float64, device="cpu")
            kernel_offset = first + offset - start
            cpu_kernels().normal_kernel(z.view(-1).numpy(), int(seed_t), kernel_offset, 0)
            return z
        seed, offset, start, generator = seed_t, first + offset - start, first, None
    words = random_words(
        count, device=device, seed=seed, offset=start, backend=backend, generator=generator
    ).to(torch.float64)
    radius = torch.sqrt(-2.0 * torch.log((words[0::2] + 1.0) / 2.0**32))
    angle = (2.0 * math.pi / 2.0**32) * words[1::2]
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).view(-1)
    return z[offset - start : offset - start + n].view(shape)


def gaussian_noise(
    shape: Sequence[int],
    p: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Multiplicative noise :math:`\varepsilon = 1 + \sqrt{p / (1 - p)}\,z` of ``shape``, with
    ``z`` from :func:`standard_normal` (computed in float64, then rounded to ``dtype``)."""
    z = standard_normal(
        shape, device=device, seed=seed, offset=offset, backend=backend, generator=generator
    )
    return (1.0 + math.sqrt(p / (1.0 - p)) * z).to(dtype)


@torch.library.custom_op("dropkit::gaussian_dropout", mutates_args=())
def _gaussian_op(
    x: torch.Tensor, seed: torch.Tensor, offset: int, p: float, backend: str
) -> torch.Tensor:
    """``x * noise`` with the noise from the Philox stream (see :func:`standard_normal`); the
    fused kernel where it applies (the same bits)."""
    if (
        backend == "numba"
        and x.dtype in _KERNEL_KIND
        and x.device.type == "cpu"
        and not _dispatch_modes()
    ):
        return _apply_noise(x, int(seed), offset, p)
    return x * _noise(seed, tuple(x.shape), p, x.dtype, x.device, offset, backend)


@_gaussian_op.register_fake
def _(x, seed, offset, p, backend):
    return torch.empty_like(x)


def _gaussian_setup(ctx, inputs, output) -> None:
    _, seed, offset, p, backend = inputs
    ctx.save_for_backward(seed)  # 8 bytes instead of a full-size noise tensor
    ctx.args = (offset, p, backend)


def _gaussian_backward(ctx, grad):
    # The op itself on the gradient (linear in x): the compiled backward stays opaque too, so
    # it regenerates the noise with the forward's kernel rather than a traced torch formula.
    (seed,) = ctx.saved_tensors
    return _gaussian_op(grad, seed, *ctx.args), None, None, None, None


_gaussian_op.register_autograd(_gaussian_backward, setup_context=_gaussian_setup)


def _noise(seed, shape, p, dtype, device, offset, backend) -> torch.Tensor:
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    return gaussian_noise(
        shape, p, dtype=dtype, device=device, seed=seed, offset=offset, backend=backend
    )


class _GaussianDropout(torch.autograd.Function):
    """``x * noise``, linear in ``x``: backward and jvp apply the same regenerated noise to the
    gradient / tangent (only the 0-d seed is saved). Under ``vmap``, ``randomness="different"``
    numbers the batched tensor as one (entry ``b`` takes positions ``offset + b * numel + i``),
    ``"same"`` uses one noise tensor for every entry, ``"error"`` raises."""

    @staticmethod
    def forward(x, seed, offset, p, backend):
        return x * _noise(seed, tuple(x.shape), p, x.dtype, x.device, offset, backend)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, seed, offset, p, backend = inputs
        ctx.save_for_backward(seed)  # 8 bytes instead of a full-size noise tensor
        ctx.save_for_forward(seed)
        ctx.args = (offset, p, backend)

    @staticmethod
    def backward(ctx, grad):
        (seed,) = ctx.saved_tensors
        return _GaussianDropout.apply(grad, seed, *ctx.args), None, None, None, None

    @staticmethod
    def jvp(ctx, x_t, *_):
        (seed,) = ctx.saved_tensors
        return _GaussianDropout.apply(x_t, seed, *ctx.args)

    @staticmethod
    def vmap(info, in_dims, x, seed, offset, p, backend):
        x, seed = batch_first(info, in_dims, x, seed)
        if info.randomness == "different":
            return _GaussianDropout.apply(x, seed, offset, p, backend), 0
        return x * _noise(seed, tuple(x.shape[1:]), p, x.dtype, x.device, offset, backend), 0


def _apply_noise(x: torch.Tensor, seed: int, offset: int, p: float) -> torch.Tensor:
    """``x * gaussian_noise(x.shape, p, dtype=x.dtype, seed=seed, offset=offset)`` in one pass of
    the fused CPU kernel (no autograd): the same bits, the noise never materialised.

    The noise is indexed by ``x``'s logical row-major index whatever its strides; the output keeps
    ``x``'s strides when ``x`` is dense (``torch.empty_like``'s rule, as dropout).
    """
    out = torch.empty_like(x)
    if not x.is_contiguous():
        return out.copy_(_apply_noise(x.contiguous(), seed, offset, p))
    sigma = math.sqrt(p / (1.0 - p))  # as gaussian_noise computes it
    half = _KERNEL_KIND[x.dtype]
    n = x.numel()
    cpu = loaded_cpu()
    if cpu is not None and 0 < n <= cpu.ADDRESS_MAX:  # by address (see dropkit.rng.cpu)
        if half is None:
            entry = cpu.gaussian_f32_at if x.dtype == torch.float32 else cpu.gaussian_f64_at
            entry(x.data_ptr(), out.data_ptr(), n, seed, offset, 0, sigma)
        else:
            cpu.gaussian_half_at(x.data_ptr(), out.data_ptr(), n, seed, offset, 0, sigma, half)
        return out
    if x.requires_grad:
        x = x.detach()
    if half is None:  # .numpy().reshape(-1): half the cost of .view(-1).numpy() at small sizes
        xa, oa = x.numpy().reshape(-1), out.numpy().reshape(-1)
        cpu_kernels().gaussian_kernel(xa, oa, seed, offset, 0, sigma)
    else:  # half types travel as their uint16 bits (NumPy has no bfloat16)
        xa = x.view(torch.int16).numpy().view(np.uint16).reshape(-1)
        oa = out.view(torch.int16).numpy().view(np.uint16).reshape(-1)
        cpu_kernels().gaussian_half_kernel(xa, oa, seed, offset, 0, sigma, half)
    return out


def _fused(x: torch.Tensor, seed: torch.Tensor, offset: int, p: float) -> torch.Tensor:
    """Gaussian dropout of a CPU tensor of a kernel dtype on the numba backend, eager.

    A call that records no graph runs the kernel directly; one that records a graph goes through
    :class:`_EagerGaussian` (classic ``forward(ctx, ...)``: torch neither binds arguments nor
    calls ``setup_context``); forward-mode AD and ``torch.func`` transforms take
    :class:`_GaussianDropout`, which has the ``jvp`` and ``vmap`` rules. Every route gives the
    same bits.
    """
    if _functorch_active() or _fwd_ad._current_level >= 0:
        return _GaussianDropout.apply(x, seed, offset, p, "numba")
    if x.requires_grad and _grad_enabled():
        return _eager_apply(x, seed, offset, p)
    return _apply_noise(x, int(seed), offset, p)


class _EagerGaussian(torch.autograd.Function):
    """Plain eager reverse mode of :class:`_GaussianDropout` (see :func:`_fused`): only the 0-d
    seed is saved; backward runs the fused kernel on the gradient (the noise regenerated), or
    records the op again under ``create_graph=True``."""

    @staticmethod
    def forward(ctx, x, seed, offset, p):
        ctx.save_for_backward(seed)  # 8 bytes instead of a full-size noise tensor
        ctx.args = (offset, p)
        return _apply_noise(x, int(seed), offset, p)

    @staticmethod
    def backward(ctx, grad):
        # the key from the saved tensor: saved-tensor hooks (checkpointing) decide what it is
        (seed,) = ctx.saved_tensors
        offset, p = ctx.args
        if grad.requires_grad and _grad_enabled():  # create_graph: record the op again
            return _fused(grad, seed, offset, p), None, None, None
        return _apply_noise(grad, int(seed), offset, p), None, None, None


# torch's Python ``Function.apply`` only unwraps dead functorch wrappers outside transforms;
# the C++ apply underneath is all a plain eager call needs.
_eager_apply = super(_SingleLevel, _EagerGaussian).apply


def gaussian_dropout(
    input: torch.Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Gaussian dropout: train :math:`y = x \odot \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(1, \sigma^2)`, :math:`\sigma^2 = p / (1 - p)` (the
    moments of the inverted Bernoulli mask); eval :math:`y = x`. ``p = 1`` is rejected (infinite
    variance). The noise is regenerated from the seed in backward, never stored.

    The noise is :func:`gaussian_noise`'s: element ``i`` (the logical row-major index, whatever
    the strides) takes stream position ``offset + i``, :math:`1 + \sigma z_i` is computed in
    float64 and rounded once to the input's dtype, and the product is taken in that dtype. On
    the CPU (numba backend) forward and backward are one fused kernel pass each
    (:func:`dropkit.rng.cpu.gaussian_kernel`) and give the bits of ``x * gaussian_noise(...)``;
    a dense non-contiguous input keeps its strides. Autograd works in every mode (backward,
    double backward, forward-mode AD, ``torch.func``, ``vmap``, ``torch.compile``).

    Shape: any; output the same.
    """
    if (
        plain_call(training, p, seed, offset, backend, generator)
        and not inplace
        and type(input) is torch.Tensor
        and input.is_cpu
        and input.dtype in _KERNEL_KIND
        and _NUMBA
        and not _is_compiling()
    ):  # the common call, with nothing to validate or resolve: straight to the kernel
        seed_t, offset = draw_key(None, 0, input.numel())
        return _fused(input, seed_t, offset, p)
    x = input
    check_input(x, "gaussian_dropout")
    p = check_p(p, "gaussian_dropout", allow_one=False)
    if not training or p == 0.0:  # no noise: the input itself, as the other variants
        return x
    check_input(x, "gaussian_dropout", inplace=inplace)
    seed_t, offset = resolve_seed(seed, offset, generator, x.numel())
    if inplace:
        return x.mul_(_noise(seed_t, tuple(x.shape), p, x.dtype, x.device, offset, backend))
    name = resolve(x.device, backend)
    if torch.compiler.is_compiling():  # opaque to the compiler, which does not trace a jvp
        return _gaussian_op(x, seed_t, offset, p, name)
    if (
        name == "numba"
        and x.dtype in _KERNEL_KIND
        and type(x) in (torch.Tensor, torch.nn.Parameter)
        and not _dispatch_modes()
    ):
        return _fused(x, seed_t, offset, p)
    return _GaussianDropout.apply(x, seed_t, offset, p, name)
