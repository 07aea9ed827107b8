"""Channel ("spatial") dropout modules (Tompson et al. 2015, arXiv:1411.4280).

Each subclasses the torch class it replaces (``isinstance(m, torch.nn.Dropout2d)`` holds) and
its ``repr`` is torch's.
"""

from __future__ import annotations

import torch

from dropkit import functional as F

from .base import DropoutModule


class Dropout1d(DropoutModule, torch.nn.Dropout1d):
    r"""Channel dropout for ``(N, C, L)``: one Bernoulli per (sample, channel), mask
    ``(N, C, 1)``; train :math:`y = m\,x / q`, eval :math:`y = x`. Other ranks raise
    ``ValueError`` (no unbatched guessing).

    Shape: ``(N, C, L)``; output the same, with the input's strides.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout1d(x, self.p, self.training, self.inplace)


class Dropout2d(DropoutModule, torch.nn.Dropout2d):
    r"""Channel dropout for ``(N, C, H, W)``: mask ``(N, C, 1, 1)``; train
    :math:`y = m\,x / q`, eval :math:`y = x`. Unlike ``torch.nn.Dropout2d``, a 3-D input is an
    error, never silently treated as 1-D channel dropout.

    Shape: ``(N, C, H, W)``; output the same, ``channels_last`` kept.

    Example:
        >>> import torch
        >>> Dropout2d(0.2)
        Dropout2d(p=0.2, inplace=False)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout2d(x, self.p, self.training, self.inplace)


class Dropout3d(DropoutModule, torch.nn.Dropout3d):
    r"""Channel dropout for ``(N, C, D, H, W)``: mask ``(N, C, 1, 1, 1)``; train
    :math:`y = m\,x / q`, eval :math:`y = x`.

    Shape: ``(N, C, D, H, W)``; output the same, ``channels_last_3d`` kept.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout3d(x, self.p, self.training, self.inplace)
