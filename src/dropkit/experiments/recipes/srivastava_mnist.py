"""``srivastava-mnist``: Srivastava et al. (2014)'s MNIST MLP: dropout with max-norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..mlp import build_mlp, max_norm_
from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier
from .mnist_mlp import mnist_tensors


@dataclass(frozen=True)
class Settings:
    """JMLR 2014, section 6.1.1 and appendix B.1: ReLU units, input dropout 0.2 and hidden
    dropout p, max-norm c on every unit's incoming weights, SGD with momentum 0.95. With p = 0
    the input dropout is off too (the plain max-norm baseline)."""

    hidden: tuple[int, ...] = (1024, 1024)
    input_p: float = 0.2
    max_norm: float = 2.0
    lr: float = 0.05
    momentum: float = 0.95
    batch_size: int = 100
    mc_samples: int = 30
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("max_norm", "lr", "batch_size", "n_train", "n_test"),
                       fractions=("input_p", "momentum"), nonnegative=("mc_samples",),
                       sizes=("hidden",))  # fmt: skip


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    train_set, test_set = mnist_tensors(ctx, s.n_train, s.n_test, flat=True)
    model = build_mlp((784, *s.hidden, 10), ctx.p, s.input_p if ctx.p > 0 else 0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)
    return run_classifier(ctx, model, optimizer, train_set, test_set, batch_size=s.batch_size,
                          mc_samples=s.mc_samples,
                          after_step=lambda net: max_norm_(net, s.max_norm))  # fmt: skip


RECIPE = register(Recipe(
    name="srivastava-mnist",
    summary="ReLU MLP 784-1024-1024-10, max-norm c=2, dropout 0.2 input / p hidden, momentum "
    "0.95",
    source="Srivastava et al. 2014, JMLR 15, section 6.1.1 (MNIST)",
    data="MNIST: a 10,000-digit training subset and the official t10k test set",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.5),
    default_epochs=20, columns=CLASSIFICATION_COLUMNS, curves=CLASSIFICATION_CURVES,
    notes="The paper trains on all 60,000 digits for many more epochs (1.25% error for this "
    "net, 1.06% with 2x4096 units); here a 10,000-digit subset on a CPU budget.",
))  # fmt: skip
