"""Character language modelling for the ``rnn-locked`` and ``transformer-lm`` recipes.

Training batches are windows of ``block_size + 1`` characters at offsets drawn uniformly from
the training text (as nanoGPT samples them), from a generator seeded by ``(seed, epoch)``; an
"epoch" is ``steps_per_epoch`` such batches. Evaluation uses fixed, evenly spaced windows, so
every epoch and every trial is scored on the same characters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .trainer import epoch_generator

__all__ = ["LMBatches", "eval_windows", "lm_loss", "logits_of"]


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``(B, T, V)`` logits of a model returning logits or ``(logits, state)``."""
    out = model(ids)
    return out[0] if isinstance(out, tuple) else out


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean next-character cross-entropy (nats) of ``(x, y)`` windows ``(B, T)``."""
    x, y = batch
    logits = logits_of(model, x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


class LMBatches:
    """``steps`` random ``(x, y)`` windows per epoch; ``y`` is ``x`` shifted by one character."""

    def __init__(self, ids: np.ndarray, block_size: int, batch_size: int, steps: int, seed: int,
                 device: torch.device) -> None:  # fmt: skip
        if len(ids) < block_size + 2:
            raise ValueError(
                f"the training text has {len(ids)} characters, too few for block_size "
                f"{block_size}; lower block_size or use more text"
            )
        self.ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        self.block_size, self.batch_size, self.steps = block_size, batch_size, steps
        self.seed, self.device = seed, device

    def __len__(self) -> int:
        return self.steps

    def __call__(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        generator = epoch_generator(self.seed, epoch)
        span = len(self.ids) - self.block_size - 1
        arange = torch.arange(self.block_size + 1)
        for _ in range(self.steps):
            starts = torch.randint(0, span + 1, (self.batch_size,), generator=generator)
            window = self.ids[starts[:, None] + arange]
            yield window[:, :-1].to(self.device), window[:, 1:].to(self.device)


def eval_windows(ids: np.ndarray, block_size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` evenly spaced ``(x, y)`` windows ``(count, block_size)`` covering ``ids``."""
    span = len(ids) - block_size - 1
    if span < 0:
        raise ValueError(f"{len(ids)} characters are too few for block_size {block_size}")
    starts = np.linspace(0, span, num=max(1, count)).astype(np.int64)
    window = np.stack([ids[s : s + block_size + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(window[:, :-1]), torch.from_numpy(window[:, 1:])


@torch.no_grad()
def evaluate_lm(model: nn.Module, windows: tuple[torch.Tensor, torch.Tensor], batch_size: int,
                device: torch.device) -> float:  # fmt: skip
    """Mean cross-entropy (nats per character) over the windows, model as it is set."""
    x, y = windows
    total = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        total += float(lm_loss(model, (xb, yb))) * len(xb)
    return total / len(x)


def perplexity(loss: float) -> float:
    """``exp(loss)`` for a loss in nats per character."""
    return math.exp(loss) if loss < 700 else math.inf


#: Results table and curves of the language-model recipes.
LM_COLUMNS = (
    ("train_loss_eval", "train loss"), ("val_loss", "val loss"), ("gap", "gap"),
    ("val_ppl", "val perplexity"), ("val_bpc", "val bits/char"),
)  # fmt: skip
LM_CURVES = (
    {"title": "loss", "ylabel": "cross-entropy (nats/char)",
     "keys": {"train_loss": "train (dropout on)", "val_loss": "val"}},
    {"title": "generalisation gap", "ylabel": "val - train loss (eval mode)",
     "keys": {"gap": "gap"}},
)  # fmt: skip
