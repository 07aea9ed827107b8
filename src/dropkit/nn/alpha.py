"""Alpha dropout modules for SELU networks (Klambauer et al. 2017, arXiv:1706.02515).

Each subclasses the torch class it replaces and its ``repr`` is torch's.
"""

from __future__ import annotations

import torch

from dropkit import functional as F

from .base import DropoutModule


class AlphaDropout(DropoutModule, torch.nn.AlphaDropout):
    r"""Train :math:`y = a (x \odot m + \alpha'(1 - m)) + b` with
    :math:`\alpha' = -\lambda\alpha`, :math:`a = (q(1 + p\alpha'^2))^{-1/2}`,
    :math:`b = -ap\alpha'`; eval :math:`y = x`. Shape: any."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.alpha_dropout(input, self.p, self.training, self.inplace)


class FeatureAlphaDropout(DropoutModule, torch.nn.FeatureAlphaDropout):
    r"""Alpha dropout with a mask per (sample, channel), ``(N, C, 1, ..., 1)``; input
    ``(N, C, *)``. Same formula as :class:`AlphaDropout`; the output keeps the input's strides."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.feature_alpha_dropout(input, self.p, self.training, self.inplace)
