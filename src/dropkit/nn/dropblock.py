"""DropBlock modules (Ghiasi, Lin & Le 2018, arXiv:1810.12890)."""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit.functional._validation import check_positive_int

from .base import DropoutModule


class _DropBlockNd(DropoutModule):
    def __init__(
        self,
        p: float = 0.1,
        block_size: int = 7,
        *,
        shared_channels: bool = False,
        inplace: bool = False,
    ) -> None:
        super().__init__(p, inplace)
        self.block_size = check_positive_int(block_size, "block_size", type(self).__name__)
        self.shared_channels = bool(shared_channels)

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, block_size={self.block_size}, "
            f"shared_channels={self.shared_channels}, inplace={self.inplace}"
        )


class DropBlock2d(_DropBlockNd):
    r"""DropBlock on images ``(N, C, H, W)``: drop ``b x b`` blocks, renormalise each sample.

    Train :math:`y = x \odot M \cdot |M| / \sum M` per sample, ``M`` the block mask of
    :func:`dropkit.functional.drop_block_mask` (seed rate
    :math:`\gamma = \frac{p}{b_h b_w}\frac{HW}{(H-b_h+1)(W-b_w+1)}`, seeds only where a whole
    block fits, blocks clipped to the map); eval :math:`y = x`. One mask per (sample, channel)
    as in the paper's Algorithm 1, or one per sample with ``shared_channels``. Odd and even
    ``block_size`` alike. Ghiasi et al. 2018 (arXiv:1810.12890).

    Shape: ``(N, C, H, W)`` (strict); output the same.

    Example:
        >>> import torch
        >>> layer = DropBlock2d(0.1, block_size=3)
        >>> layer(torch.ones(2, 4, 9, 9)).shape
        torch.Size([2, 4, 9, 9])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.drop_block2d(
            x,
            self.p,
            self.training,
            block_size=self.block_size,
            shared_channels=self.shared_channels,
            inplace=self.inplace,
        )


class DropBlock3d(_DropBlockNd):
    r"""DropBlock on volumes ``(N, C, D, H, W)``: cubic blocks, seed rate
    :math:`\gamma = \frac{p}{b_d b_h b_w}\prod_d \frac{n_d}{n_d - b_d + 1}`, otherwise as
    :class:`DropBlock2d` (Ghiasi et al. 2018, arXiv:1810.12890).

    Shape: ``(N, C, D, H, W)`` (strict); output the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.drop_block3d(
            x,
            self.p,
            self.training,
            block_size=self.block_size,
            shared_channels=self.shared_channels,
            inplace=self.inplace,
        )
