"""DropBlock: drop contiguous square (cubic) regions of feature maps.

Ghiasi, Lin & Le 2018, "DropBlock: A regularization method for convolutional networks"
(arXiv:1810.12890), Algorithm 1. Convolutional features are spatially correlated, so dropping
single activations leaks the information through the neighbours; dropping whole blocks does not.

How the mask is built (per sample, per channel unless ``shared_channels=True``):

1. Block extent per spatial dim: ``b_d = min(block_size, size_d)`` (a block larger than the
   feature map is clipped to the map, the documented rule).
2. Seeds are drawn only where a whole block fits: positions ``i_d in [0, size_d - b_d]``, each a
   seed with probability
   ``gamma = p * prod(size_d) / (prod(b_d) * prod(size_d - b_d + 1))`` (clipped to [0, 1]),
   the paper's formula generalised to rectangular maps (gamma = 1 at p = 1, so that p = 1 drops
   everything).
3. A seed at ``i`` drops the block ``[i_d, i_d + b_d)`` in every dim (top-left anchored, so odd
   and even sizes behave alike); the keep mask is 1 minus the union of the blocks.
4. Output ``y = x * mask * count / kept``, where ``count`` and ``kept`` are the number of mask
   entries and of kept entries *of that sample* (0 when nothing is kept), so every sample keeps
   its expected sum.

Blocks overlap, so the dropped fraction is a little below ``p`` (the paper's gamma ignores
overlaps); :func:`drop_probability` gives the exact per-position drop probability.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .base import MaskedLayer, RngLike, as_float_array, check_positive_int, given_mask


def block_extent(block_size: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Block extent per spatial dim: ``block_size`` clipped to the feature-map size."""
    return tuple(min(block_size, n) for n in spatial)


def seed_probability(p: float, block_size: int, spatial: tuple[int, ...]) -> float:
    """The seed rate gamma of step 2 (see the module docstring), in [0, 1].

    ``p = 1`` gives gamma = 1 (a seed at every valid position, so every position is dropped);
    the formula alone would leave gaps whenever blocks are larger than 1.
    """
    if p >= 1.0:
        return 1.0
    extent = block_extent(block_size, spatial)
    # Plain Python integers: exact, and traced as constants by torch.compile (NumPy would not be).
    valid = math.prod([n - b + 1 for n, b in zip(spatial, extent, strict=True)])
    gamma = p * math.prod(spatial) / (math.prod(extent) * valid)
    return min(max(gamma, 0.0), 1.0)


def dilate(seeds: np.ndarray, extent: tuple[int, ...]) -> np.ndarray:
    """Union of the blocks anchored at ``seeds`` (bool, trailing dims spatial, seed grid of size
    ``size_d - b_d + 1``): returns bool with trailing dims ``size_d``, True = dropped."""
    lead = seeds.shape[: seeds.ndim - len(extent)]
    valid = seeds.shape[seeds.ndim - len(extent) :]
    spatial = tuple(v + b - 1 for v, b in zip(valid, extent, strict=True))
    dropped = np.zeros(lead + spatial, dtype=bool)
    for shift in itertools.product(*(range(b) for b in extent)):
        window = tuple(slice(s, s + v) for s, v in zip(shift, valid, strict=True))
        dropped[(..., *window)] |= seeds
    return dropped


def drop_probability(p: float, block_size: int, spatial: tuple[int, ...]) -> np.ndarray:
    """Exact probability that each position is dropped: ``1 - (1 - gamma)^c`` where ``c`` counts
    the valid seeds whose block covers the position. Shape ``spatial``."""
    extent = block_extent(block_size, spatial)
    gamma = seed_probability(p, block_size, spatial)
    valid = tuple(n - b + 1 for n, b in zip(spatial, extent, strict=True))
    cover = np.zeros(spatial, dtype=np.int64)
    for shift in itertools.product(*(range(b) for b in extent)):
        cover[tuple(slice(s, s + v) for s, v in zip(shift, valid, strict=True))] += 1
    return 1.0 - (1.0 - gamma) ** cover


class _DropBlock(MaskedLayer):
    spatial_ndim: int
    layout: str

    def __init__(
        self,
        p: float = 0.1,
        block_size: int = 7,
        *,
        shared_channels: bool = False,
        rng: RngLike = None,
    ) -> None:
        super().__init__(p, rng)
        self.block_size = check_positive_int(block_size, "block_size", type(self).__name__)
        self.shared_channels = bool(shared_channels)

    def _check_rank(self, x: np.ndarray) -> None:
        expected = 2 + self.spatial_ndim
        if x.ndim != expected:
            raise ValueError(
                f"{type(self).__name__} expects input of shape {self.layout} ({expected} dims), "
                f"got {x.ndim} dims with shape {x.shape}; for one unbatched sample add the "
                "batch dim first, e.g. x[None]"
            )

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, C, *spatial)``, or ``(N, 1, *spatial)`` with ``shared_channels``."""
        n, c, *spatial = shape
        return (n, 1 if self.shared_channels else c, *spatial)

    def sample_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Draw the keep mask (bool, True = kept) for an input of ``shape``."""
        mshape = self.mask_shape(shape)
        spatial = mshape[2:]
        extent = block_extent(self.block_size, spatial)
        valid = tuple(n - b + 1 for n, b in zip(spatial, extent, strict=True))
        gamma = seed_probability(self.p, self.block_size, spatial)
        # U < gamma is True with probability exactly gamma (gamma = 1 seeds everywhere).
        seeds = self.rng.random(mshape[:2] + valid) < gamma
        return ~dilate(seeds, extent)

    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply DropBlock; ``mask`` (optional bool keep mask of :meth:`mask_shape`) replaces
        the random draw."""
        x = as_float_array(x, type(self).__name__)
        self._check_rank(x)
        if not training:
            return self._masked_forward(x, None, 1)
        if mask is None:
            keep = self.sample_mask(x.shape)
        else:
            keep = given_mask(mask, self.mask_shape(x.shape), type(self).__name__)
        # Per-sample renormalisation: count / kept, defined as 0 when the sample kept nothing.
        per_sample = keep.reshape(keep.shape[0], -1)
        kept = per_sample.sum(axis=1)
        scale = np.where(kept > 0, per_sample.shape[1] / np.maximum(kept, 1), 0.0)
        scale = scale.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return self._masked_forward(x, keep, scale)

    def extra_repr(self) -> str:
        text = f"p={self.p}, block_size={self.block_size}"
        return text + (", shared_channels=True" if self.shared_channels else "")


class DropBlock2d(_DropBlock):
    r"""DropBlock on images ``(N, C, H, W)`` (Ghiasi et al. 2018, Algorithm 1).

    Train :math:`y = x \odot M \cdot |M| / \sum M` per sample, with ``M`` the block mask built
    as in the module docstring (seed rate
    :math:`\gamma = \frac{p}{b_h b_w}\frac{HW}{(H-b_h+1)(W-b_w+1)}`); eval :math:`y = x`.
    Backward :math:`dx = dy \odot M \cdot |M| / \sum M`. ``p = 1`` seeds every valid position,
    which drops the whole map: zeros and zero gradients.

    Args:
        p: target drop probability in [0, 1].
        block_size: block side (odd or even), clipped to the map size.
        shared_channels: one mask per sample shared by all channels (default: one per channel,
            as in the paper's Algorithm 1).
        rng: generator, seed or None.
    """

    spatial_ndim = 2
    layout = "(N, C, H, W)"


class DropBlock3d(_DropBlock):
    r"""DropBlock on volumes ``(N, C, D, H, W)``: cubic blocks, otherwise as
    :class:`DropBlock2d` (seed rate :math:`\gamma = \frac{p}{b^3}\prod_d
    \frac{n_d}{n_d - b_d + 1}`)."""

    spatial_ndim = 3
    layout = "(N, C, D, H, W)"
