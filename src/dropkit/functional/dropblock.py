"""DropBlock: drop contiguous square (cubic) regions of feature maps.

Ghiasi, Lin & Le 2018, "DropBlock: A regularization method for convolutional networks"
(arXiv:1810.12890), Algorithm 1. The mask follows :mod:`dropkit.reference.dropblock` exactly:
block extent ``b_d = min(block_size, size_d)``, seeds only where a whole block fits (the
``size_d - b_d + 1`` valid grid) with rate ``gamma`` from :func:`seed_probability`, top-left
anchored blocks, and a per-sample renormalisation ``count / kept``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as TF

from dropkit.reference.dropblock import block_extent, seed_probability

from ._validation import check_input, check_p, check_positive_int, check_rank
from .mask import bernoulli_mask, masked_scale

_LAYOUTS = {2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}
_POOLS = {2: TF.max_pool2d, 3: TF.max_pool3d}


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
    kernel ``b`` over the seed grid padded by ``b_d - 1`` zeros on both sides.

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
    if len(shape) - 2 not in _POOLS:
        raise ValueError(
            "drop_block_mask: shape must be (N, C, H, W) or (N, C, D, H, W) (4 or 5 dims), "
            f"got {len(shape)} dims: {shape}"
        )
    p = check_p(p, "drop_block_mask")
    block_size = check_positive_int(block_size, "block_size", "drop_block_mask")
    n, c, *rest = shape
    spatial = tuple(rest)
    lead = (n, 1 if shared_channels else c)
    if 0 in shape:  # nothing to drop, and gamma's formula would divide by zero
        return torch.ones(lead + spatial, dtype=torch.bool, device=device)
    extent = block_extent(block_size, spatial)
    valid = tuple(s - b + 1 for s, b in zip(spatial, extent, strict=True))
    gamma = seed_probability(p, block_size, spatial)
    # U < gamma is True with probability exactly gamma; gamma = 1 (p = 1) seeds everywhere.
    # A seed is a position *not* kept at rate gamma: P(seed) = gamma, and gamma = 1 (p = 1)
    # seeds everywhere. Seed-grid element i takes Philox stream position offset + i.
    seeds = ~bernoulli_mask(
        lead + valid, gamma, device=device, seed=seed, offset=offset, backend=backend,
        generator=generator,
    )  # fmt: skip
    if all(b == 1 for b in extent):
        return ~seeds
    # max-pool has no bool kernel; 0/1 floats are exact. F.pad lists the last dim first.
    padding = [b - 1 for b in reversed(extent) for _ in range(2)]
    grid = TF.pad(seeds.to(torch.float32), padding)
    dropped = _POOLS[len(spatial)](grid, kernel_size=extent, stride=1)
    return dropped == 0


def _drop_block(x, p, training, block_size, shared_channels, inplace, rng, spatial):
    owner = f"drop_block{spatial}d"
    check_input(x, owner, inplace=inplace)
    check_rank(x, 2 + spatial, _LAYOUTS[spatial], owner)
    p = check_p(p, owner)
    block_size = check_positive_int(block_size, "block_size", owner)
    if not training:
        return x
    keep = drop_block_mask(
        x.shape,
        p,
        block_size,
        shared_channels=shared_channels,
        device=x.device,
        **rng,
    )
    per_sample = keep.flatten(1)
    # Integer count, then a float32 (or float64) ratio: float16 cannot hold large counts.
    kept = per_sample.sum(1).to(torch.promote_types(x.dtype, torch.float32))
    # new_full / kept rather than count / kept: torch's scalar / tensor is a reciprocal times
    # the scalar, one rounding more than the reference's division.
    ratio = kept.new_full(kept.shape, per_sample.shape[1]) / kept.clamp_min(1)
    scale = torch.where(kept > 0, ratio, 0.0).to(x.dtype)
    return masked_scale(x, keep, scale.view((-1,) + (1,) * (x.dim() - 1)), inplace=inplace)


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

    Shape: x ``(N, C, H, W)`` (strict); output the same.

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

    Shape: x ``(N, C, D, H, W)`` (strict); output the same.
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
