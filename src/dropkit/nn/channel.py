"""Channel ("spatial") dropout modules (Tompson et al. 2015, arXiv:1411.4280)."""

from __future__ import annotations

import torch

from dropkit import functional as F

from .base import DropoutModule


class Dropout1d(DropoutModule):
    r"""Channel dropout for ``(N, C, L)``: one Bernoulli per (sample, channel), mask
    ``(N, C, 1)``; train :math:`y = m\,x / q`, eval :math:`y = x`. Other ranks raise
    ``ValueError`` (no unbatched guessing)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout1d(x, self.p, self.training, inplace=self.inplace)


class Dropout2d(DropoutModule):
    r"""Channel dropout for ``(N, C, H, W)``: mask ``(N, C, 1, 1)``; train
    :math:`y = m\,x / q`, eval :math:`y = x`. Unlike ``torch.nn.Dropout2d``, a 3-D input is an
    error, never silently treated as 1-D channel dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, self.training, inplace=self.inplace)


class Dropout3d(DropoutModule):
    r"""Channel dropout for ``(N, C, D, H, W)``: mask ``(N, C, 1, 1, 1)``; train
    :math:`y = m\,x / q`, eval :math:`y = x`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout3d(x, self.p, self.training, inplace=self.inplace)
