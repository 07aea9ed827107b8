"""DropBlock: drop contiguous square (cubic) regions of feature maps.

Ghiasi, Lin & Le 2018, "DropBlock: A regularization method for convolutional networks"
(arXiv:1810.12890), Algorithm 1. The mask follows :mod:`dropkit.reference.dropblock` exactly:
block extent ``b_d = min(block_size, size_d)``, seeds only where a whole block fits (the
``size_d - b_d + 1`` valid grid) with rate ``gamma`` from :func:`seed_probability`, top-left
anchored blocks, and a per-sample renormalisation ``count / kept``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as TF

from dropkit.reference.dropblock import block_extent, seed_probability
from dropkit.rng.kernels import numba_available

from ._validation import check_input, check_p, check_positive_int, check_rank
from .mask import (
    bernoulli_mask,
    eager_buffer,
    eager_keep_mask,
    eager_keep_ones,
    eager_seed,
    resolve_seed,
)

_LAYOUTS = {2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_NUMBA = numba_available()
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active
_FAST_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _geometry(
    p: float, block_size: int, spatial: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], float]:
    """Block extent, seed-grid size and seed rate gamma of a map of size ``spatial``."""
    extent = block_extent(block_size, spatial)
    valid = tuple(s - b + 1 for s, b in zip(spatial, extent, strict=True))
    return extent, valid, seed_probability(p, block_size, spatial)


#: :func:`_geometry` memoised for eager calls (``torch.compile`` does not follow ``lru_cache``).
_cached_geometry = functools.lru_cache(maxsize=256)(_geometry)

#: Maps whose dilation matrix (seed-grid positions x map positions) has at most this many
#: entries are dilated by one float32 matrix product (tiny and small maps, where operator
#: dispatch is the whole cost); larger ones by the separable ORs of :func:`_dilate`.
_MATRIX_MAX = 1 << 14


@functools.lru_cache(maxsize=64)
def _dilation_matrix(
    valid: tuple[int, ...], extent: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``D`` (float32, ``prod(valid) x prod(spatial)``), ``D[s, i] = 1`` iff the block anchored
    at seed-grid position ``s`` covers map position ``i`` (both row-major), and ``cover =
    D.sum(0)``, the number of seed positions whose block covers ``i``. ``D`` is the Kronecker
    product of the per-dim band matrices ``[i_d - b_d < s_d <= i_d]``."""
    dilation = np.ones((1, 1), dtype=np.float32)
    for v, b in zip(valid, extent, strict=True):
        s = np.arange(v)[:, None]
        i = np.arange(v + b - 1)[None, :]
        dilation = np.kron(dilation, ((s <= i) & (i < s + b)).astype(np.float32))
    return dilation, dilation.sum(0)


def _dropped_by_matrix(
    grid: tuple[int, ...], seed: int, offset: int, gamma: float, extent: tuple[int, ...]
) -> tuple[np.ndarray, torch.Tensor]:
    """:func:`_dilate` of the eager seed grid by one matrix product, as a NumPy array and a
    tensor over the same memory: with ``K`` the kept seed positions as float32 ones,
    ``(K @ D)[i]`` counts the kept seed positions whose block covers ``i`` (an exact integer),
    and ``i`` is dropped iff that is below ``cover[i]``."""
    valid = grid[2:]
    spatial = tuple(v + b - 1 for v, b in zip(valid, extent, strict=True))
    dilation, cover = _dilation_matrix(valid, extent)
    rows = grid[0] * grid[1]
    kept = eager_keep_ones((rows, dilation.shape[0]), seed, offset, gamma)
    counts, _ = eager_buffer((rows, dilation.shape[1]), np.float32)
    dropped, dropped_t = eager_buffer((rows, dilation.shape[1]), np.bool_)
    np.less(np.matmul(kept, dilation, out=counts), cover, out=dropped)
    return dropped, dropped_t.view(grid[:2] + spatial)


def _window_any(grid: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """OR of every ``size`` consecutive entries along ``dim`` (the dim shrinks by ``size - 1``):
    entry ``j`` of the result is ``grid[j] | ... | grid[j + size - 1]``.

    Spans double (``ceil(log2 size)`` ORs of two shifted views, the last one topping up to
    ``size``), instead of the ``size - 1`` compares per element of a sliding max.
    """
    span = 1
    while span < size:
        step = min(span, size - span)  # the union of [j, j + span) and [j + step, ...) is whole
        n = grid.shape[dim] - step
        grid = grid.narrow(dim, 0, n) | grid.narrow(dim, step, n)
        span += step
    return grid


def _dilate(seeds: torch.Tensor, extent: tuple[int, ...]) -> torch.Tensor:
    """Union of the blocks anchored at ``seeds`` (bool ``(N, C, *valid)``): bool
    ``(N, C, *spatial)``, True = dropped.

    Position ``i`` is dropped iff a seed lies in ``[i_d - b_d + 1, i_d]`` in every dim: per
    spatial dim, ``b_d - 1`` zeros padded on both sides and the OR of each window of ``b_d``
    (a stride-1 max-pool of kernel ``b`` over the padded grid, done one dim at a time in bool).
    """
    out = seeds
    for k in reversed(range(len(extent))):
        b = extent[k]
        if b > 1:
            padding = [0, 0] * (len(extent) - 1 - k) + [b - 1, b - 1]  # last dim listed first
            out = _window_any(TF.pad(out, padding), 2 + k, b)
    return out


def _dropped(
    shape: tuple[int, ...],
    p: float,
    block_size: int,
    shared_channels: bool,
    device: torch.device | str | None,
    seed: int | torch.Tensor | None,
    offset: int,
    backend: str | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The dropped positions (bool, True = dropped) of :func:`drop_block_mask` for a shape
    without zero sizes. On the CPU (numba, no ``torch.func`` transform, not compiling) the seed
    grid comes straight from the numba kernel; elsewhere from :func:`bernoulli_mask`; the same
    bits either way."""
    n, c, *rest = shape
    geometry = _geometry if _is_compiling() else _cached_geometry
    extent, valid, gamma = geometry(p, block_size, tuple(rest))
    grid = (n, 1 if shared_channels else c, *valid)
    if (
        gamma < 1.0
        and (device is None or torch.device(device).type == "cpu")
        and backend in (None, "numba")
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):
        seed_t, offset = resolve_seed(seed, offset, generator, math.prod(grid))
        if math.prod(valid) * math.prod(rest) <= _MATRIX_MAX:
            return _dropped_by_matrix(grid, int(seed_t), offset, gamma, extent)[1]
        seeds = eager_keep_mask(grid, int(seed_t), offset, gamma, dropped=True)
    else:
        # A seed is a position *not* kept at rate gamma: P(seed) = gamma, and gamma = 1 (p = 1)
        # seeds everywhere. Seed-grid element i takes Philox stream position offset + i.
        seeds = ~bernoulli_mask(
            grid, gamma, device=device, seed=seed, offset=offset, backend=backend,
            generator=generator,
        )  # fmt: skip
    return _dilate(seeds, extent)


def drop_block_mask(
    shape: Sequence[int],
    p: float,
    block_size: int,
    *,
    shared_channels: bool = False,
    device: torch.device | str | None = None,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""DropBlock keep mask (bool, True = kept) for an input of ``shape`` ``(N, C, *spatial)``.

    Seeds :math:`s = U < \gamma`, :math:`U \sim U[0, 1)` of shape ``(N, C or 1, *valid)`` with
    ``valid_d = size_d - b_d + 1``; a seed at ``i`` drops ``[i_d, i_d + b_d)`` in every spatial
    dim, and the mask is 1 minus the union of the blocks. The union is a stride-1 max-pool of
    kernel ``b`` over the seed grid padded by ``b_d - 1`` zeros on both sides, computed one dim
    at a time as ORs of shifted bool views.

    Shape: ``shape`` is ``(N, C, H, W)`` or ``(N, C, D, H, W)``; the mask is the same with
    ``C`` replaced by 1 when ``shared_channels``. Ghiasi et al. 2018 (arXiv:1810.12890),
    Algorithm 1.

    Example:
        >>> import torch
        >>> keep = drop_block_mask((1, 1, 5, 5), 1.0, 3)  # p = 1 seeds every valid position
        >>> bool(keep.any())
        False
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) - 2 not in _LAYOUTS:
        raise ValueError(
            "drop_block_mask: shape must be (N, C, H, W) or (N, C, D, H, W) (4 or 5 dims), "
            f"got {len(shape)} dims: {shape}"
        )
    p = check_p(p, "drop_block_mask")
    block_size = check_positive_int(block_size, "block_size", "drop_block_mask")
    if 0 in shape:  # nothing to drop, and gamma's formula would divide by zero
        n, c, *spatial = shape
        lead = (n, 1 if shared_channels else c)
        return torch.ones(lead + tuple(spatial), dtype=torch.bool, device=device)
    rng = dict(seed=seed, offset=offset, backend=backend, generator=generator)
    return ~_dropped(shape, p, block_size, shared_channels, device, **rng)


def _scale(x: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Per-sample ``count / kept`` (0 for a sample that keeps nothing) as ``(N, 1, ..., 1)`` in
    ``x``'s dtype: the integer counts, a float32 (float64 for float64 inputs) ratio, one
    rounding to ``x``'s dtype."""
    n = x.shape[0]
    per_sample = dropped.reshape(n, -1)
    count = per_sample.shape[1]
    wide = torch.promote_types(x.dtype, torch.float32)
    # Integer count, then a float32 (or float64) ratio: float16 cannot hold large counts.
    kept = (count - per_sample.sum(1)).to(wide)
    # new_full / kept rather than count / kept: torch's scalar / tensor is a reciprocal times
    # the scalar, one rounding more than the reference's division.
    ratio = kept.new_full(kept.shape, count) / kept.clamp_min(1)
    scale = torch.where(kept > 0, ratio, 0.0).to(x.dtype)
    return scale.view((-1,) + (1,) * (x.dim() - 1))


def _eager_scale(x: torch.Tensor, dropped: np.ndarray) -> torch.Tensor:
    """:func:`_scale` in NumPy for an eager CPU call (the same integer counts and IEEE
    roundings, without operator dispatch); ``dropped`` is the mask's NumPy view."""
    n = x.shape[0]
    per_sample = dropped.reshape(n, -1)
    count = per_sample.shape[1]
    wide = np.float64 if x.dtype == torch.float64 else np.float32
    kept = (count - np.count_nonzero(per_sample, axis=1)).astype(wide)
    # ratio * (kept > 0): exact, the ratio is finite (kept is clamped to 1 first)
    scale = (wide(count) / np.maximum(kept, wide(1))) * (kept > 0)
    scale = torch.from_numpy(scale.reshape((n,) + (1,) * (x.dim() - 1)))
    return scale if scale.dtype == x.dtype else scale.to(x.dtype)


def _apply(x: torch.Tensor, dropped: torch.Tensor, scale: torch.Tensor, inplace: bool):
    """``where(~dropped, x * scale, 0)``; outside ``torch.func`` transforms the product is
    cleared in place (one output-sized buffer, and the output keeps ``x``'s memory format)."""
    if _functorch_active() and not inplace:
        return torch.where(dropped, torch.zeros((), dtype=x.dtype, device=x.device), x * scale)
    return (x.mul_(scale) if inplace else x * scale).masked_fill_(dropped, 0)


def _drop_block(x, p, training, block_size, shared_channels, inplace, rng, spatial):
    if (
        training
        and type(p) is float
        and 0.0 < p < 1.0
        and type(block_size) is int
        and block_size >= 1
        and not inplace
        and rng["seed"] is None
        and rng["offset"] == 0
        and rng["backend"] is None
        and rng["generator"] is None
        and type(x) is torch.Tensor
        and x.is_cpu
        and x.dtype in _FAST_DTYPES
        and x.dim() == 2 + spatial
        and x.numel() > 0
        and _NUMBA
        and not _functorch_active()
        and not _is_compiling()
    ):  # the common call, with nothing to validate: straight to the numba seed grid
        n, c, *rest = x.shape
        extent, valid, gamma = _cached_geometry(p, block_size, tuple(rest))
        grid = (n, 1 if shared_channels else c, *valid)
        seed, start = eager_seed(math.prod(grid))
        if math.prod(valid) * math.prod(rest) <= _MATRIX_MAX:
            dropped, dropped_t = _dropped_by_matrix(grid, seed, start, gamma, extent)
            return _apply(x, dropped_t, _eager_scale(x, dropped), False)
        seeds = eager_keep_mask(grid, seed, start, gamma, dropped=True)
        dropped_t = _dilate(seeds, extent)
        return _apply(x, dropped_t, _eager_scale(x, dropped_t.numpy()), False)
    owner = f"drop_block{spatial}d"
    check_input(x, owner, inplace=inplace)
    check_rank(x, 2 + spatial, _LAYOUTS[spatial], owner)
    p = check_p(p, owner)
    block_size = check_positive_int(block_size, "block_size", owner)
    if not training:
        return x
    if x.numel() == 0:
        return x if inplace else x * 1
    dropped = _dropped(tuple(x.shape), p, block_size, shared_channels, x.device, **rng)
    return _apply(x, dropped, _scale(x, dropped), inplace)


def drop_block2d(
    x: torch.Tensor,
    p: float = 0.1,
    training: bool = True,
    *,
    block_size: int = 7,
    shared_channels: bool = False,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""DropBlock on images: drop ``b x b`` blocks, renormalise each sample.

    Train :math:`y = x \odot M \cdot |M| / \sum M` per sample (0 for a sample that keeps
    nothing), ``M`` from :func:`drop_block_mask` with seed rate
    :math:`\gamma = \frac{p}{b_h b_w}\frac{HW}{(H-b_h+1)(W-b_w+1)}`; eval :math:`y = x` (``x``
    itself). One mask per (sample, channel), as the paper's Algorithm 1, or per sample with
    ``shared_channels``. ``block_size`` may be odd or even and is clipped to the map. ``p = 1``
    gives zeros with zero gradient. Ghiasi et al. 2018 (arXiv:1810.12890).

    Shape: x ``(N, C, H, W)`` (strict); output the same, in the input's memory format
    (``channels_last`` kept).

    Example:
        >>> import torch
        >>> y = drop_block2d(torch.ones(2, 3, 8, 8), p=0.2, block_size=3)
        >>> y.shape
        torch.Size([2, 3, 8, 8])
    """
    return _drop_block(
        x,
        p,
        training,
        block_size,
        shared_channels,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        2,
    )


def drop_block3d(
    x: torch.Tensor,
    p: float = 0.1,
    training: bool = True,
    *,
    block_size: int = 7,
    shared_channels: bool = False,
    inplace: bool = False,
    seed: int | torch.Tensor | None = None,
    offset: int = 0,
    backend: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""DropBlock on volumes: cubic ``b x b x b`` blocks, seed rate
    :math:`\gamma = \frac{p}{b_d b_h b_w}\prod_d \frac{n_d}{n_d - b_d + 1}`, otherwise as
    :func:`drop_block2d` (Ghiasi et al. 2018, arXiv:1810.12890).

    Shape: x ``(N, C, D, H, W)`` (strict); output the same, in the input's memory format.
    """
    return _drop_block(
        x,
        p,
        training,
        block_size,
        shared_channels,
        inplace,
        dict(seed=seed, offset=offset, backend=backend, generator=generator),
        3,
    )
