"""``cnn-spatial``: a CNN with channel (spatial) dropout after each conv and dropout in the head."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cnn import build_spatial_cnn
from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier
from .mnist_mlp import mnist_tensors


@dataclass(frozen=True)
class Settings:
    """Conv widths, head size and optimiser; ``fc_p`` (None: the trial's p) for the head."""

    channels: tuple[int, ...] = (32, 64)
    hidden: int = 128
    fc_p: float | None = None
    lr: float = 1e-3
    batch_size: int = 64
    mc_samples: int = 10
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("hidden", "lr", "batch_size", "n_train", "n_test"),
                       nonnegative=("mc_samples",))  # fmt: skip
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"setting channels must be two sizes >= 1, got {self.channels!r}")
        if self.fc_p is not None and not 0 <= self.fc_p < 1:
            raise ValueError(f"setting fc_p must be None or in [0, 1), got {self.fc_p!r}")


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    train_set, test_set = mnist_tensors(ctx, s.n_train, s.n_test, flat=False)
    fc_p = ctx.p if s.fc_p is None or ctx.p == 0 else s.fc_p
    model = build_spatial_cnn(ctx.p, fc_p, tuple(s.channels), s.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    return run_classifier(ctx, model, optimizer, train_set, test_set, batch_size=s.batch_size,
                          mc_samples=s.mc_samples)  # fmt: skip


RECIPE = register(Recipe(
    name="cnn-spatial",
    summary="CNN conv-Dropout2d-pool x2 + dropout MLP head on 28x28 MNIST digits",
    source="Tompson et al. 2015, 'Efficient object localization using convolutional networks' "
    "(spatial dropout)",
    data="MNIST: a 10,000-digit training subset and the official t10k test set",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.1, 0.3),
    default_epochs=8, columns=CLASSIFICATION_COLUMNS, curves=CLASSIFICATION_CURVES,
))  # fmt: skip
