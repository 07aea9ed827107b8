"""``mnist-mlp``: the Keras MNIST MLP example (784-128-64-10, Dropout 0.5, Adam, 5 epochs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dropkit.data import load_mnist_test, load_mnist_train_subset

from ..mlp import build_mlp
from ..recipe import Recipe, TrialContext, check_settings, register
from ..trainer import CLASSIFICATION_COLUMNS, CLASSIFICATION_CURVES, run_classifier


@dataclass(frozen=True)
class Settings:
    """The Keras example's network and optimiser (Keras defaults: Adam lr 1e-3)."""

    hidden: tuple[int, ...] = (128, 64)
    lr: float = 1e-3
    batch_size: int = 32
    mc_samples: int = 50
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("lr", "batch_size", "n_train", "n_test"),
                       nonnegative=("mc_samples",), sizes=("hidden",))  # fmt: skip


def mnist_tensors(ctx: TrialContext, n_train: int | None, n_test: int | None, flat: bool):
    """MNIST as float tensors in [0, 1]: the 10k training subset (shuffled once, seed 0) and
    the official t10k test set; ``(N, 784)`` when ``flat`` else ``(N, 1, 28, 28)``."""
    x_train, y_train = load_mnist_train_subset(ctx.data_path)
    x_test, y_test = load_mnist_test(ctx.data_path)
    order = np.random.default_rng(0).permutation(len(x_train))  # the subset is sorted by class
    x_train, y_train = x_train[order][:n_train], y_train[order][:n_train]
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    shape = (-1, 784) if flat else (-1, 1, 28, 28)

    def tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.reshape(shape).astype(np.float32) / 255.0)

    return (tensor(x_train), torch.from_numpy(y_train)), (tensor(x_test), torch.from_numpy(y_test))


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    train_set, test_set = mnist_tensors(ctx, s.n_train, s.n_test, flat=True)
    model = build_mlp((784, *s.hidden, 10), ctx.p)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    return run_classifier(ctx, model, optimizer, train_set, test_set, batch_size=s.batch_size,
                          mc_samples=s.mc_samples)  # fmt: skip


RECIPE = register(Recipe(
    name="mnist-mlp",
    summary="the Keras MNIST example's MLP 784-128-64-10 (ReLU, Adam, batch 32) with Dropout(p) "
    "after each hidden layer",
    source="the Keras MNIST MLP example (Dropout 0.5 after each hidden layer)",
    data="MNIST: a 10,000-digit training subset and the official t10k test set",
    task="classification", settings=Settings, train=train, default_rates=(0.0, 0.2, 0.5),
    default_epochs=5, columns=CLASSIFICATION_COLUMNS, curves=CLASSIFICATION_CURVES,
))  # fmt: skip
