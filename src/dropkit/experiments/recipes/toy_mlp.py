"""``toy-mlp``: a NumPy MLP with dropout trained by manual backprop (no torch) on random labels.

Its checkpoint is an ``.npz`` of arrays plus the mask generators' states as JSON text, loaded
with ``allow_pickle=False``: resuming reads data, never code.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dropkit.reference import SGD, SoftmaxCrossEntropy

from ..recipe import Recipe, TrialContext, check_settings, register
from ..runs import CheckpointError, write_atomic
from ..toy_mlp import ToyMLPConfig, accuracy, build_model, make_data

CHECKPOINT = "checkpoint.npz"
#: Written by earlier versions as a pickle; never loaded (a pickle can run code).
OLD_CHECKPOINT = "checkpoint.pkl"


def save_state(path: Path, epoch: int, model: Any, optimizer: SGD) -> None:
    """Parameters, SGD velocities and generator states of ``model`` after ``epoch``, as npz."""
    arrays: dict[str, np.ndarray] = {"epoch": np.array(epoch)}
    generators = {}
    for index, layer in enumerate(model.modules()):
        for name, value in layer.params.items():
            arrays[f"param/{index}/{name}"] = value
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            generators[str(index)] = layer.rng.bit_generator.state
    for (index, name), value in optimizer._velocity.items():
        arrays[f"velocity/{index}/{name}"] = value
    arrays["generators"] = np.array(json.dumps(generators))
    write_atomic(path, lambda h: np.savez(h, **arrays))


def load_state(path: Path, model: Any, optimizer: SGD) -> int:
    """Restore what :func:`save_state` wrote into ``model`` and ``optimizer``; the epoch.

    Raises :class:`~dropkit.experiments.runs.CheckpointError` for any other file.
    """
    layers = list(model.modules())
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        epoch = int(arrays.pop("epoch"))
        generators = json.loads(str(arrays.pop("generators")))
        for key, value in arrays.items():
            kind, index, name = key.split("/")
            if kind == "param":
                target = layers[int(index)].params[name]
                if target.shape != value.shape:
                    raise ValueError(f"{key} has shape {value.shape}, not {target.shape}")
                target[...] = value
            elif kind == "velocity":
                optimizer._velocity[(int(index), name)] = value.copy()
            else:
                raise ValueError(f"unknown entry {key}")
        for index, state in generators.items():
            layers[int(index)].rng.bit_generator.state = state
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            zipfile.BadZipFile) as error:  # fmt: skip
        raise CheckpointError(path, type(error).__name__) from None
    if epoch < 0:
        raise CheckpointError(path, f"epoch {epoch}")
    return epoch


@dataclass(frozen=True)
class Settings:
    """The data and network: Gaussian inputs with random labels (memorisation)."""

    n_samples: int = 128
    n_features: int = 20
    n_hidden: int = 64
    n_classes: int = 5
    lr: float = 0.5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_samples", "n_features", "n_hidden", "lr", "init_std"))
        if self.n_classes < 2:
            raise ValueError(f"setting n_classes must be >= 2, got {self.n_classes!r}")


def train(ctx: TrialContext) -> dict[str, float]:
    """Full-batch SGD, one step per epoch; the parameters, optimiser and mask generator states
    are saved after each epoch so a resumed trial continues bit for bit."""
    s: Settings = ctx.settings
    config = ToyMLPConfig(n_samples=s.n_samples, n_features=s.n_features, n_hidden=s.n_hidden,
                          n_classes=s.n_classes, p=ctx.p, lr=s.lr, epochs=ctx.epochs,
                          init_std=s.init_std, seed=ctx.seed)  # fmt: skip
    x, y = make_data(config)
    criterion = SoftmaxCrossEntropy()
    path = ctx.trial.file(CHECKPOINT)
    model = build_model(config)
    optimizer, start = SGD(model, lr=config.lr), 0
    if ctx.resume and path.is_file():
        start = load_state(path, model, optimizer)
    elif ctx.resume and ctx.trial.file(OLD_CHECKPOINT).is_file():
        raise CheckpointError(ctx.trial.file(OLD_CHECKPOINT), "a pickle, which could run code")
    ctx.trial.truncate(start)
    for epoch in range(start + 1, ctx.epochs + 1):
        logits = model.forward(x, training=True)
        loss = float(criterion.forward(logits, y))
        model.backward(criterion.backward(1.0))
        optimizer.step()
        eval_logits = model.forward(x, training=False)
        record = {"epoch": epoch, "train_loss": loss, "train_mode_acc": accuracy(logits, y),
                  "eval_loss": float(criterion.forward(eval_logits, y)),
                  "eval_acc": accuracy(eval_logits, y)}  # fmt: skip
        ctx.trial.append_metrics(record)
        save_state(path, epoch, model, optimizer)
        if ctx.on_epoch is not None:
            ctx.on_epoch(record)
    train_logits = model.forward(x, training=True)
    eval_logits = model.forward(x, training=False)
    train_acc, eval_acc = accuracy(train_logits, y), accuracy(eval_logits, y)
    return {"final_loss": float(criterion.forward(train_logits, y)),
            "train_mode_acc": train_acc, "eval_acc": eval_acc, "gap": eval_acc - train_acc,
            "eval_loss": float(criterion.forward(eval_logits, y))}  # fmt: skip


RECIPE = register(Recipe(
    name="toy-mlp",
    summary="NumPy MLP 20-64-5 with dropout, manual backprop, memorising 128 random labels",
    source="dropout from scratch: a NumPy MLP with manual backprop (Srivastava et al. 2014, "
    "section 4)",
    data="synthetic: 128 Gaussian inputs in 20 dimensions with uniformly random labels (5 classes)",
    task="toy", settings=Settings, train=train, default_rates=(0.0, 0.5), default_epochs=200,
    columns=(("final_loss", "train loss"), ("train_mode_acc", "train-mode acc (dropout on)"),
             ("eval_acc", "eval acc (dropout off)"), ("gap", "eval - train-mode")),
    curves=({"title": "loss", "ylabel": "cross-entropy",
             "keys": {"train_loss": "train mode", "eval_loss": "eval mode"}, "log_y": True},
            {"title": "accuracy", "ylabel": "accuracy",
             "keys": {"train_mode_acc": "train mode", "eval_acc": "eval mode"}}),
    sweep_metric=("eval_acc", "eval accuracy"),
    notes="Random labels: nothing generalises, so the table compares fitting with dropout on "
    "(a fresh mask each pass) and off (the averaged network).",
))  # fmt: skip
