"""Locked (variational) dropout for RNN inputs and outputs (Gal & Ghahramani 2016)."""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit.functional.mask import eager_cpu, eager_shared_mask

from .base import DropoutModule


class LockedDropout(DropoutModule):
    r"""One mask per sequence, shared over time: ``(T, N, H)`` with mask ``(1, N, H)``, or
    ``(N, T, H)`` with mask ``(N, 1, H)`` when ``batch_first``. Train :math:`y_t = m \odot x_t
    / q`, eval :math:`y = x` (Gal & Ghahramani 2016, arXiv:1512.05287)."""

    def __init__(self, p: float = 0.5, batch_first: bool = False, inplace: bool = False) -> None:
        super().__init__(p, inplace)
        self.batch_first = bool(batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        if self.training and 0.0 < p < 1.0 and not self.inplace and x.dim() == 3 and eager_cpu(x):
            t = 1 if self.batch_first else 0  # the time dim shares the mask
            shape = (1, *x.shape[1:]) if t == 0 else (x.shape[0], 1, x.shape[2])
            return x * eager_shared_mask(x, shape, p, 1.0 / (1.0 - p))
        return F.locked_dropout(x, p, self.training, self.inplace, batch_first=self.batch_first)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch_first={self.batch_first}"
