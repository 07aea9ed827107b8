"""``digits-mlp``: the demo — an MLP on scikit-learn's 8×8 digits with and without dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dropkit.data import load_digits_split

from ..mlp import build_mlp
from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier


@dataclass(frozen=True)
class Settings:
    """A wide two-hidden-layer MLP on a small training set, so that it can overfit."""

    hidden: int = 512
    lr: float = 1e-3
    batch_size: int = 32
    test_size: float = 0.5
    mc_samples: int = 50
    n_train: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("hidden", "lr", "batch_size", "n_train"),
                       fractions=("test_size",), nonnegative=("mc_samples",))  # fmt: skip


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    x_train, y_train, x_test, y_test = load_digits_split(test_size=s.test_size, seed=0)
    x_train, y_train = x_train[: s.n_train], y_train[: s.n_train]
    model = build_mlp((64, s.hidden, s.hidden, 10), ctx.p)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    return run_classifier(
        ctx, model, optimizer,
        (torch.from_numpy(x_train), torch.from_numpy(y_train)),
        (torch.from_numpy(x_test), torch.from_numpy(y_test)),
        batch_size=s.batch_size, mc_samples=s.mc_samples,
    )  # fmt: skip


RECIPE = register(Recipe(
    name="digits-mlp",
    summary="MLP 64-512-512-10 on scikit-learn's 8x8 digits (half for training): dropout vs none",
    source="the dropkit demo (Srivastava et al. 2014 on a dataset that needs no download)",
    data="scikit-learn digits: 1797 8x8 images, stratified 50/50 train/test split",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.2, 0.5),
    default_epochs=30, columns=CLASSIFICATION_COLUMNS, curves=CLASSIFICATION_CURVES,
))  # fmt: skip
