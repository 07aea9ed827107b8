"""Channel ("spatial") dropout modules (Tompson et al. 2015, arXiv:1411.4280).

Each subclasses the torch class it replaces (``isinstance(m, torch.nn.Dropout2d)`` holds) and
its ``repr`` is torch's.
"""

from __future__ import annotations

import torch

from dropkit import functional as F
from dropkit.functional.mask import eager_cpu, eager_shared_mask

from .base import DropoutModule


class Dropout1d(DropoutModule, torch.nn.Dropout1d):
    r"""Channel dropout for ``(N, C, L)``: one Bernoulli per (sample, channel), mask
    ``(N, C, 1)``; train :math:`y = m\,x / q`, eval :math:`y = x`. An unbatched ``(C, L)`` is
    one sample, as in torch; other ranks raise ``ValueError``.

    Shape: ``(N, C, L)`` or ``(C, L)``; output the same, with the input's strides.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _channel_forward(self, input, 1, F.dropout1d)


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

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _channel_forward(self, input, 2, F.dropout2d)


class Dropout3d(DropoutModule, torch.nn.Dropout3d):
    r"""Channel dropout for ``(N, C, D, H, W)``: mask ``(N, C, 1, 1, 1)``; train
    :math:`y = m\,x / q`, eval :math:`y = x`.

    Shape: ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)`` (as in torch); output the same,
    ``channels_last_3d`` kept.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _channel_forward(self, input, 3, F.dropout3d)


def _channel_forward(module: DropoutModule, x: torch.Tensor, spatial: int, op) -> torch.Tensor:
    """The common call (training, 0 < p < 1, not in place, the right rank, plain eager CPU)
    goes straight to the ``(N, C, 1, ...)`` mask and one multiply; anything else to ``op``,
    which validates and handles every case (same mask for the same seed either way)."""
    p = module.p
    if (
        module.training
        and 0.0 < p < 1.0
        and not module.inplace
        and x.dim() == spatial + 2
        and eager_cpu(x)
    ):
        shape = (x.shape[0], x.shape[1]) + (1,) * spatial
        return x * eager_shared_mask(x, shape, p, 1.0 / (1.0 - p))
    return op(x, p, module.training, module.inplace)
