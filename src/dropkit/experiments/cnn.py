"""The small convolutional network of the ``cnn-spatial`` recipe."""

from __future__ import annotations

from torch import nn

from dropkit import nn as dkn

__all__ = ["build_spatial_cnn"]


def build_spatial_cnn(p: float, fc_p: float | None = None, channels: tuple[int, int] = (32, 64),
                      hidden: int = 128, n_classes: int = 10) -> nn.Sequential:  # fmt: skip
    """Two conv blocks with channel (spatial) dropout, then a dropout MLP head, for 28×28 input.

    ``Conv(1, c1, 3, pad 1) ReLU Dropout2d(p) MaxPool(2)`` → ``Conv(c1, c2, 3, pad 1) ReLU
    Dropout2d(p) MaxPool(2)`` → ``Flatten Linear(c2·7·7, hidden) ReLU Dropout(fc_p)
    Linear(hidden, K)``. Dropout2d zeroes whole feature maps (Tompson et al. 2015): neighbouring
    activations in a map are strongly correlated, so per-pixel dropout barely regularises
    convolutions. ``fc_p`` defaults to ``p``. Input ``(N, 1, 28, 28)``, logits ``(N, K)``.
    """
    c1, c2 = channels
    fc_p = p if fc_p is None else fc_p
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), dkn.Dropout2d(p), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), dkn.Dropout2d(p), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), dkn.Dropout(fc_p),
        nn.Linear(hidden, n_classes),
    )  # fmt: skip
