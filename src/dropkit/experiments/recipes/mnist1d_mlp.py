"""``mnist1d-mlp``: Greydanus (2020)'s MNIST-1D MLP baseline, with and without dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dropkit.data import load_mnist1d

from ..mlp import build_mlp
from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier


@dataclass(frozen=True)
class Settings:
    """The paper's MLP: 40-100-100-10 ReLU, Adam lr 1e-2, batch 100 (6000 steps there: 150
    epochs of the 4000 training examples)."""

    hidden: tuple[int, ...] = (100, 100)
    lr: float = 1e-2
    batch_size: int = 100
    mc_samples: int = 50
    data_seed: int = 42

    def __post_init__(self) -> None:
        check_settings(
            self, sizes=("hidden",), positive=("lr", "batch_size"), nonnegative=("mc_samples",)
        )


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    x_train, y_train, x_test, y_test = load_mnist1d(seed=s.data_seed)
    model = build_mlp((x_train.shape[1], *s.hidden, 10), ctx.p)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    return run_classifier(
        ctx, model, optimizer, (torch.from_numpy(x_train), torch.from_numpy(y_train)),
        (torch.from_numpy(x_test), torch.from_numpy(y_test)), batch_size=s.batch_size,
        mc_samples=s.mc_samples,
    )  # fmt: skip


RECIPE = register(Recipe(
    name="mnist1d-mlp",
    summary="MLP 40-100-100-10 on MNIST-1D: the no-dropout baseline overfits (~68% test acc)",
    source="Greydanus 2020, 'Scaling down deep learning' (MNIST-1D), MLP baseline",
    data="MNIST-1D (4000 train / 1000 test, 40 features), generated offline by mnist1d",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.2, 0.5),
    default_epochs=150, columns=CLASSIFICATION_COLUMNS, curves=CLASSIFICATION_CURVES,
))  # fmt: skip
