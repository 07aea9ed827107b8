"""Gaussian dropout module (Srivastava et al. 2014 section 10; Wang & Manning 2013)."""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit.reference.base import DropRate

from .base import DropoutModule


class GaussianDropout(DropoutModule):
    r"""Train :math:`y = x \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(1, p/(1-p))`;
    eval :math:`y = x`. ``p`` must be in [0, 1). Shape: any."""

    p = DropRate(allow_one=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gaussian_dropout(x, self.p, self.training, self.inplace)
