"""Mask geometry, counter-based keep masks and the masked rescale shared by every variant.

A keep mask has the input's shape with the *shared* dims set to 1 (Keras' ``noise_shape``,
flax's ``broadcast_dims``); the output is ``where(keep, x * scale, 0)``. Masks come from the
Philox stream of :mod:`dropkit.rng`: mask element ``i`` (row-major over the *mask* tensor) takes
stream position ``offset + i``, so a mask is a pure function of ``(seed, offset, shape, p)``.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence

import numpy as np
import torch

from dropkit.rng import backend as rng_backend
from dropkit.rng.kernels import cpu_kernels, loaded_cpu, numba_available
from dropkit.rng.ops import cached_threshold, philox_words, threshold

_NUMBA = numba_available()
_functorch_active = torch._C._are_functorch_transforms_active
_is_compiling = torch.compiler.is_compiling


def shared_dims(shape: Sequence[int], broadcast_dims: Sequence[int], owner: str) -> tuple[int, ...]:
    """Normalise ``broadcast_dims`` (negative allowed) against a rank, sorted and unique."""
    ndim = len(shape)
    out = set()
    for d in broadcast_dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"{owner}: broadcast_dims must be ints, got {tuple(broadcast_dims)!r}")
        if not -ndim <= d < ndim:
            raise ValueError(
                f"{owner}: broadcast dim {d} is out of range for an input with {ndim} dims "
                f"(shape {tuple(shape)}); allowed dims are -{ndim}..{ndim - 1}"
            )
        out.add(d % ndim)
    return tuple(sorted(out))


def mask_shape(shape: Sequence[int], dims: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with the (normalised) shared ``dims`` set to 1."""
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def resolve_seed(
    seed: int | torch.Tensor | None,
    offset: int,
    generator: torch.Generator | None,
    numel: int | None = None,
) -> tuple[torch.Tensor, int]:
    """The call's seed as a 0-d int64 tensor: ``seed`` if given, else one fresh draw from
    ``generator`` (default: torch's global generator, or the active stream, whose
    data-parallel shard moves ``offset`` by the rank's first element of the ``numel``-position
    mask: :func:`dropkit.rng.backend.draw_key`)."""
    seed_t, offset = rng_backend.check_seed(seed, offset)
    if seed_t is None:
        return rng_backend.draw_key(generator, offset, numel)
    return seed_t, offset


def random_words(
    n: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """The Philox words (int64 in [0, 2^32)) of stream positions ``offset .. offset + n - 1``."""
    device = torch.device("cpu" if device is None else device)
    seed_t, offset = resolve_seed(seed, offset, generator, n)
    return philox_words(seed_t, offset, n, device, rng_backend.resolve(device, backend))


def bernoulli_mask(
    shape: Sequence[int],
    p: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
) -> torch.Tensor:
    """Keep mask (bool, True = kept with probability ``1 - p``) of ``shape``.

    Element ``i`` is kept iff the Philox word of position ``offset + i`` is at least
    ``round(p * 2^32)`` (unsigned; nothing is kept at ``p = 1``). Without ``seed``, the seed is
    drawn from ``generator`` or torch's global generator, so ``torch.manual_seed`` reproduces the
    mask and activation checkpointing replays it. Bit-identical to
    :func:`dropkit.rng.keep_mask` on every backend but ``"torch"``.
    """
    shape = tuple(int(n) for n in shape)
    if p >= 1.0:  # nothing kept; the seed is still drawn so later draws do not shift
        resolve_seed(seed, offset, generator, math.prod(shape))
        return torch.zeros(shape, dtype=torch.bool, device=device)
    words = random_words(
        math.prod(shape), device=device, generator=generator, seed=seed, offset=offset,
        backend=backend,
    )  # fmt: skip
    return (words >= threshold(p)).view(shape)


def keep_scale(p: float) -> float:
    """Inverted-dropout scale ``1 / (1 - p)``, defined as 0 at ``p = 1`` (zeros, never NaN)."""
    return 1.0 / (1.0 - p) if p < 1.0 else 0.0


def masked_scale(
    x: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor, *, inplace: bool = False
) -> torch.Tensor:
    """``where(keep, x * scale, 0)``; ``inplace`` writes the result into ``x``.

    ``where`` (rather than ``x * keep * scale``) means a dropped ``inf`` gives 0, not NaN, and
    the gradient is ``where(keep, dy * scale, 0)``.
    """
    if inplace:
        return x.mul_(scale).masked_fill_(~keep, 0)
    return torch.where(keep, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))


# ---------------------------------------------------------------- shared (broadcast) masks


def _wide(dtype: torch.dtype) -> torch.dtype:
    # Mask values are float32(scale) (float64 for float64 inputs), then rounded to the input's
    # dtype: the value torch's and timm's own noise tensors hold.
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=256)
def _mask_value(scale: float, dtype: torch.dtype) -> tuple[np.dtype, int | float]:
    """NumPy dtype and fill value of a scaled keep mask in ``dtype``: ``scale`` in the wide type
    (:func:`_wide`), then rounded to ``dtype``; half types as their uint16 bits."""
    if dtype in (torch.float16, torch.bfloat16):
        wide = torch.tensor(scale, dtype=torch.float32).to(dtype)
        return np.dtype(np.uint16), int(wide.view(torch.int16).item()) & 0xFFFF
    if dtype == torch.float64:
        return np.dtype(np.float64), float(scale)
    return np.dtype(np.float32), float(np.float32(scale))


def _cpu_scaled_keep(shape: tuple[int, ...], seed: int, offset: int, p: float, scale: float,
                     dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """The scaled keep mask filled by one numba pass straight into a NumPy-owned buffer (numba
    types a NumPy array faster than a view of a torch tensor; at these sizes dispatch is the
    whole cost), wrapped without a copy."""
    np_dtype, value = _mask_value(scale, dtype)
    thr = cached_threshold(p)
    n = math.prod(shape)
    cpu = loaded_cpu()
    if cpu is not None and n <= cpu.ADDRESS_MAX:  # by address: no NumPy (see dropkit.rng.cpu)
        if np_dtype == np.uint16:
            mask = torch.empty(shape, dtype=torch.int16)
            cpu.scaled_keep_u16_at(mask.data_ptr(), n, seed, offset, 0, thr, value)
            return mask.view(dtype)
        mask = torch.empty(shape, dtype=_wide(dtype))
        entry = cpu.scaled_keep_f32_at if np_dtype == np.float32 else cpu.scaled_keep_f64_at
        entry(mask.data_ptr(), n, seed, offset, 0, thr, value)
        return mask if mask.dtype == dtype else mask.to(dtype)
    values = np.empty(shape, dtype=np_dtype)
    cpu_kernels().scaled_keep_kernel(values.reshape(-1), seed, offset, 0, thr, value)
    mask = torch.from_numpy(values)
    if np_dtype == np.uint16:
        return mask.view(dtype)
    return mask if mask.dtype == dtype else mask.to(dtype)


_seed_buffers = threading.local()


def eager_seed(numel: int) -> tuple[int, int]:
    """``(seed, first stream position)`` of an eager call that needs the seed only as an int:
    the draw :func:`dropkit.rng.backend.draw_key` makes (the same value, the same advance of
    torch's CPU generator), written into a per-thread 0-d buffer instead of a new tensor."""
    if rng_backend.active_stream is not None:
        seed_t, offset = rng_backend.draw_key(None, 0, numel)
        return int(seed_t), offset
    buffer = getattr(_seed_buffers, "seed", None)
    if buffer is None:
        # A normal tensor even when the first call runs under torch.inference_mode(): an
        # inference tensor could not be written in place outside it.
        with torch.inference_mode(False):
            buffer = _seed_buffers.seed = torch.empty((), dtype=torch.int64, device="cpu")
    return int(buffer.random_(0, rng_backend.SEED_BOUND - 1)), 0


#: Eager scratch buffers (masks) of at most this many elements are NumPy-owned (numba types a
#: NumPy array faster than a view of a torch tensor, and at this size dispatch is the whole
#: cost); larger ones are torch-owned, so that torch's memory accounting (profiler, allocator
#: hooks) sees every full-size allocation.
_NUMPY_OWNED_MAX = 1 << 12
_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.bool_): torch.bool}


def eager_buffer(shape: tuple[int, ...], np_dtype: type) -> tuple[np.ndarray, torch.Tensor]:
    """An uninitialised CPU buffer of ``shape`` as a NumPy array and a tensor over the same
    memory (float32 or bool): NumPy-owned up to ``_NUMPY_OWNED_MAX`` elements, else
    torch-owned."""
    if math.prod(shape) <= _NUMPY_OWNED_MAX:
        array = np.empty(shape, dtype=np_dtype)
        return array, torch.from_numpy(array)
    tensor = torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(np_dtype)], device="cpu")
    return tensor.numpy(), tensor


def eager_keep_mask(
    shape: tuple[int, ...], seed: int, offset: int, p: float, *, dropped: bool = False
) -> torch.Tensor:
    """:func:`bernoulli_mask`'s bits (``0 < p < 1``) for eager CPU callers, filled by one numba
    pass: True where kept, or where dropped with ``dropped=True`` (saving a separate ``~``).

    Element ``i`` (row-major over ``shape``) is kept iff the Philox word of position
    ``offset + i`` is at least the keep threshold, exactly as in :func:`bernoulli_mask`; no
    operator dispatch, no int64 word tensor (2 bytes of scratch per element, then the bool).
    """
    n = math.prod(shape)
    thr = cached_threshold(p)
    if n <= _NUMPY_OWNED_MAX:
        marks = np.empty(n, dtype=np.uint16)
        cpu_kernels().scaled_keep_kernel(marks, seed, offset, 0, thr, 1)
        decision = np.equal(marks, 0) if dropped else np.not_equal(marks, 0)
        return torch.from_numpy(decision.reshape(shape))
    marks_t = torch.empty(shape, dtype=torch.int16, device="cpu")
    flat = marks_t.numpy().view(np.uint16).reshape(-1)
    cpu_kernels().scaled_keep_kernel(flat, seed, offset, 0, thr, 1)
    return marks_t == 0 if dropped else marks_t != 0


def eager_keep_ones(shape: tuple[int, ...], seed: int, offset: int, p: float) -> np.ndarray:
    """:func:`eager_keep_mask` as float32 ones (kept) and zeros (dropped), a NumPy array (see
    :func:`eager_buffer`), for callers that count kept positions with a matrix product."""
    ones, _ = eager_buffer(shape, np.float32)
    cpu_kernels().scaled_keep_kernel(ones.reshape(-1), seed, offset, 0, cached_threshold(p), 1.0)
    return ones


def eager_cpu(x: torch.Tensor) -> bool:
    """Whether ``x`` can take the eager CPU fast paths: a plain floating-point CPU tensor, numba
    installed, and no ``torch.func`` transform or ``torch.compile`` trace running."""
    return (
        type(x) is torch.Tensor
        and x.is_cpu
        and x.is_floating_point()
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    )


def eager_shared_mask(x: torch.Tensor, shape: tuple[int, ...], p: float, scale: float):
    """The scaled keep mask of ``shape`` for an :func:`eager_cpu` input, its seed drawn as
    :func:`shared_mask_dropout` draws it (``0 < p < 1``, ``scale != 0``): the whole shared-mask
    dropout is then ``x * eager_shared_mask(...)``."""
    seed, offset = eager_seed(math.prod(shape))
    return _cpu_scaled_keep(shape, seed, offset, p, scale, x.dtype)


@torch.library.custom_op("dropkit::scaled_keep_mask", mutates_args=())
def _scaled_keep_op(
    seed: torch.Tensor,
    offset: int,
    shape: list[int],
    p: float,
    scale: float,
    dtype: torch.dtype,
    device: torch.device,
    backend: str,
) -> torch.Tensor:
    """``where(keep, scale, 0)`` of ``shape`` in ``dtype``, keep from the Philox stream."""
    keep = bernoulli_mask(shape, p, device=device, seed=seed, offset=offset, backend=backend)
    return keep.to(_wide(dtype)).mul_(scale).to(dtype)


@_scaled_keep_op.register_fake
def _(seed, offset, shape, p, scale, dtype, device, backend):
    return torch.empty(shape, dtype=dtype, device=device)


def batch_first(info, in_dims, x: torch.Tensor, seed: torch.Tensor):
    """For an autograd.Function's ``vmap`` rule over ``(x, seed, ...)``: ``x`` with its batch
    dim first (expanded if ``x`` is shared) and the unbatched seed. A seed drawn under vmap
    has one value per entry; the first keys them all. With ``randomness="error"`` the seed was
    given or drawn outside vmap (drawing it inside raises in torch's ``randint``), so the op is
    deterministic and treated as ``"same"`` (this is how ``jacrev`` vmaps a backward)."""
    if in_dims[1] is not None:
        seed = seed.select(in_dims[1], 0)
    if in_dims[0] is None:
        return x.unsqueeze(0).expand(info.batch_size, *x.shape), seed
    return x.movedim(in_dims[0], 0), seed


class _ScaledKeep(torch.autograd.Function):
    """The scaled keep mask of ``mask_shape(x.shape, dims)`` under ``torch.func`` transforms.

    ``x`` (detached) only carries the per-entry shape and the vmap batch. Under ``vmap`` with
    ``randomness="different"`` entry ``b`` takes positions ``offset + b * M + i`` (``M`` the
    mask size: the mask of a ``(B, *mask)`` batch, as :class:`dropkit.rng.function.PhiloxDropout`
    numbers a vmapped tensor); ``"same"`` (and ``"error"``, see :func:`batch_first`) gives one
    mask for every entry.
    """

    @staticmethod
    def forward(x, seed, offset, dims, p, scale, backend):
        shape = list(mask_shape(x.shape, dims))
        return _scaled_keep_op(seed, offset, shape, p, scale, x.dtype, x.device, backend)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output)

    @staticmethod
    def vmap(info, in_dims, x, seed, offset, dims, p, scale, backend):
        if in_dims[1] is not None:  # a seed drawn under vmap: one per entry; the first keys all
            seed = seed.select(in_dims[1], 0)
        if in_dims[0] is not None:
            x = x.movedim(in_dims[0], 0)[0]
        shape = list(mask_shape(x.shape, dims))
        if info.randomness == "different":
            shape = [info.batch_size, *shape]
        out = _scaled_keep_op(seed, offset, shape, p, scale, x.dtype, x.device, backend)
        return out, (0 if info.randomness == "different" else None)


def scaled_keep_mask(
    x: torch.Tensor,
    dims: Sequence[int],
    p: float,
    scale: float,
    *,
    seed: torch.Tensor,
    offset: int,
    backend: str | None = None,
) -> torch.Tensor:
    """``scale`` where :func:`bernoulli_mask` keeps, else 0: the mask of ``x``'s shape with the
    normalised ``dims`` set to 1, in ``x``'s dtype and on its device (``p < 1``).

    ``seed`` is a resolved 0-d int64 tensor (see :func:`resolve_seed`). In eager CPU code the
    few words of a shared mask go straight from the numba kernel into the tensor (operator
    dispatch would dominate small calls); under ``torch.func`` transforms, ``torch.compile`` and
    on other devices the same mask comes from the ``dropkit::scaled_keep_mask`` operator. Meta
    tensors get an empty mask.
    """
    device = x.device
    if (
        x.is_cpu
        and (backend is None or backend == "numba")
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):
        shape = tuple(1 if i in dims else n for i, n in enumerate(x.shape))
        return _cpu_scaled_keep(shape, int(seed), offset, p, scale, x.dtype)
    if device.type == "meta":
        return torch.empty(mask_shape(x.shape, dims), dtype=x.dtype, device=device)
    name = rng_backend.resolve(device, backend)
    shape = list(mask_shape(x.shape, dims))
    if torch._C._are_functorch_transforms_active() and not torch.compiler.is_compiling():
        return _ScaledKeep.apply(x.detach(), seed, offset, tuple(dims), p, scale, name)
    return _scaled_keep_op(seed, offset, shape, p, scale, x.dtype, device, name)


def shared_mask_dropout(
    x: torch.Tensor,
    p: float,
    dims: Sequence[int],
    *,
    scale: float,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Training-mode dropout with one draw per element of the *mask* (``x``'s shape with the
    normalised ``dims`` set to 1): :math:`y = x \cdot m`, :math:`m = \mathrm{scale}\cdot
    \mathrm{keep}` in ``x``'s dtype.

    One broadcast multiply in plain torch ops, so autograd (saving only the small mask),
    forward-mode AD, ``torch.func.vmap``, the input's strides and the meta device all come from
    ``torch.mul``. A dropped ``inf`` or ``NaN`` gives ``NaN``, as in torch's ``Dropout2d`` and
    timm's ``drop_path``, except at ``p = 1``, which gives exact zeros.
    """
    if (
        seed is None
        and offset == 0
        and generator is None
        and p < 1.0
        and scale != 0.0
        and (backend is None or backend == "numba")
        and x.is_cpu
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):  # the common eager CPU call: draw, fill the small mask in numba, one multiply
        mask = eager_shared_mask(x, mask_shape(x.shape, dims), p, scale)
        return x.mul_(mask) if inplace else x * mask
    seed_t, offset = resolve_seed(seed, offset, generator, math.prod(mask_shape(x.shape, dims)))
    if p >= 1.0 or scale == 0.0:
        nothing = torch.zeros((), dtype=torch.bool, device=x.device)
        return masked_scale(x, nothing, 0.0, inplace=inplace)
    mask = scaled_keep_mask(x, dims, p, scale, seed=seed_t, offset=offset, backend=backend)
    return x.mul_(mask) if inplace else x * mask
