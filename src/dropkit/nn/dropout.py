"""``Dropout`` with a configurable mask geometry (Srivastava et al. 2014)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dropkit import functional as F

from .base import DropoutModule


class Dropout(DropoutModule, torch.nn.Dropout):
    r"""Dropout: zero elements with probability ``p``, sharing the mask along ``broadcast_dims``.

    Train :math:`y = m \odot x / q` (inverted, default) or :math:`y = m \odot x`
    (``inverted=False``), :math:`m \sim \mathrm{Bernoulli}(1 - p)` of the input's shape with
    ``broadcast_dims`` set to 1; eval :math:`y = x` (inverted) or :math:`y = q\,x`.
    A drop-in replacement for ``torch.nn.Dropout`` (Hinton et al. 2012; Srivastava et al. 2014).

    Shape: input ``(*)``; output the same.

    Example:
        >>> import torch
        >>> layer = Dropout(0.1, broadcast_dims=(1,))  # one draw per row, shared along dim 1
        >>> layer(torch.ones(4, 8)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        p: float = 0.5,
        inplace: bool = False,
        inverted: bool = True,
        *,
        broadcast_dims: Sequence[int] = (),
    ) -> None:
        super().__init__(p, inplace)
        self.inverted = bool(inverted)
        self.broadcast_dims = tuple(broadcast_dims)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout(
            input,
            self.p,
            self.training,
            inplace=self.inplace,
            inverted=self.inverted,
            broadcast_dims=self.broadcast_dims,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if not self.inverted:
            text += ", inverted=False"
        if self.broadcast_dims:
            text += f", broadcast_dims={self.broadcast_dims}"
        return text
