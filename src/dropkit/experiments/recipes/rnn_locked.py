"""``rnn-locked``: a character LSTM with naive (per-step) vs locked (variational) dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..char_lstm import CharLSTM
from ..lm import LM_COLUMNS, LM_CURVES
from ..recipe import Recipe, TrialContext, check_settings, register
from ._lm import run_lm, shakespeare


@dataclass(frozen=True)
class Settings:
    """Model and optimiser of a small char-LSTM sized for a CPU; ``weight_p`` adds DropConnect
    on the hidden-to-hidden weights (AWD-LSTM's weight drop) and ``embed_p`` embedding dropout
    to the ``locked`` variant."""

    embed_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    weight_p: float = 0.0
    embed_p: float = 0.0
    block_size: int = 64
    batch_size: int = 32
    steps_per_epoch: int = 200
    eval_windows: int = 256
    lr: float = 2e-3
    n_chars: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("embed_dim", "hidden_size", "num_layers", "block_size",
                                       "batch_size", "steps_per_epoch", "eval_windows", "lr",
                                       "n_chars"),
                       fractions=("weight_p", "embed_p"))  # fmt: skip


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    corpus = shakespeare(ctx, s.n_chars)
    locked = ctx.variant == "locked"
    model = CharLSTM(corpus.vocab_size, s.embed_dim, s.hidden_size, s.num_layers, p=ctx.p,
                     variant="locked" if locked else "standard",
                     p_embed=s.embed_p if locked and ctx.p > 0 else 0.0,
                     p_weight=s.weight_p if locked and ctx.p > 0 else 0.0)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    return run_lm(ctx, corpus, model, optimizer, block_size=s.block_size,
                  batch_size=s.batch_size, steps_per_epoch=s.steps_per_epoch,
                  eval_windows_count=s.eval_windows)  # fmt: skip


RECIPE = register(Recipe(
    name="rnn-locked",
    summary="char-LSTM on Tiny Shakespeare: per-time-step dropout vs locked (variational) dropout",
    source="Gal & Ghahramani 2016, 'A theoretically grounded application of "
    "dropout in recurrent neural networks'",
    data="Tiny Shakespeare (1.1M characters), first 90% train / last 10% validation",
    task="lm", settings=Settings, train=train, default_rates=(0.0, 0.25), default_epochs=10,
    variants=("standard", "locked"), columns=LM_COLUMNS, curves=LM_CURVES,
    sweep_metric=("val_loss", "validation loss (nats/char)"),
))  # fmt: skip
