"""Dropout from scratch: a NumPy MLP with dropout trained by manual backprop.

A two-layer network ``Linear -> ReLU -> Dropout(p) -> Linear`` is fitted to Gaussian inputs with
random labels (pure memorisation) with full-batch SGD and softmax cross-entropy. With dropout
the training-mode accuracy (a fresh mask each pass) stays below the evaluation accuracy (dropout
off, the averaged network) - the gap dropout is known for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dropkit.reference import SGD, Dropout, Linear, ReLU, Sequential, SoftmaxCrossEntropy


@dataclass(frozen=True)
class ToyMLPConfig:
    """Hyper-parameters of the toy experiment (defaults: the ``toy-mlp`` recipe's)."""

    n_samples: int = 128
    n_features: int = 20
    n_hidden: int = 64
    n_classes: int = 5
    p: float = 0.5
    lr: float = 0.5
    epochs: int = 200
    init_std: float = 0.02
    log_every: int = 50
    seed: int = 0


@dataclass(frozen=True)
class EpochRecord:
    """Loss and accuracy of one training-mode pass (dropout on)."""

    epoch: int
    loss: float
    train_accuracy: float


@dataclass(frozen=True)
class ToyMLPResult:
    """What one run produced: the logged epochs and the final accuracies."""

    config: ToyMLPConfig
    history: list[EpochRecord] = field(default_factory=list)
    #: Accuracy of a training-mode pass (dropout on) after the last update.
    train_mode_accuracy: float = 0.0
    #: Accuracy with dropout off (evaluation mode).
    eval_accuracy: float = 0.0
    eval_loss: float = 0.0


def make_data(config: ToyMLPConfig) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs ``(N, d)`` and uniformly random labels ``(N,)`` in ``[0, K)``."""
    rng = np.random.default_rng(config.seed)
    x = rng.standard_normal((config.n_samples, config.n_features))
    y = rng.integers(0, config.n_classes, size=config.n_samples)
    return x, y


def build_model(config: ToyMLPConfig) -> Sequential:
    """``Linear(d, H) -> ReLU -> Dropout(p) -> Linear(H, K)``, weights ``N(0, init_std^2)``."""
    rng = np.random.default_rng(config.seed + 1)
    return Sequential(
        Linear(config.n_features, config.n_hidden, init_std=config.init_std, rng=rng),
        ReLU(),
        Dropout(config.p, rng=rng),
        Linear(config.n_hidden, config.n_classes, init_std=config.init_std, rng=rng),
    )


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``logits`` ``(N, K)`` whose argmax equals ``labels`` ``(N,)``."""
    return float(np.mean(logits.argmax(axis=1) == labels))


def run_toy_mlp(
    config: ToyMLPConfig = ToyMLPConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> ToyMLPResult:
    """Train the toy MLP and return its history and final accuracies.

    Every epoch is one full-batch step: forward in training mode, loss, backward, SGD update.
    ``history`` holds epochs 1 and every ``log_every``-th (plus the last); ``on_epoch`` is called
    with each logged record (for progress output).
    """
    x, y = make_data(config)
    model = build_model(config)
    criterion = SoftmaxCrossEntropy()
    optimizer = SGD(model, lr=config.lr)
    history: list[EpochRecord] = []
    for epoch in range(1, config.epochs + 1):
        logits = model.forward(x, training=True)
        loss = float(criterion.forward(logits, y))
        model.backward(criterion.backward(1.0))
        optimizer.step()
        if epoch == 1 or epoch % config.log_every == 0 or epoch == config.epochs:
            record = EpochRecord(epoch, loss, accuracy(logits, y))
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    train_logits = model.forward(x, training=True)
    eval_logits = model.forward(x, training=False)
    return ToyMLPResult(
        config=config,
        history=history,
        train_mode_accuracy=accuracy(train_logits, y),
        eval_accuracy=accuracy(eval_logits, y),
        eval_loss=float(criterion.forward(eval_logits, y)),
    )
