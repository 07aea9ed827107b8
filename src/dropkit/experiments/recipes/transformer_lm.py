"""``transformer-lm``: a character GPT with no / standard / Standout / scheduled dropout."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dropkit.schedules import DropoutScheduler, curriculum

from ..char_gpt import CharGPT, param_groups
from ..lm import LM_COLUMNS, LM_CURVES
from ..recipe import Recipe, TrialContext, check_settings, register
from ._lm import run_lm, shakespeare


@dataclass(frozen=True)
class Settings:
    """A small nanoGPT-style model sized for a 2-core CPU (about 0.1 M parameters, ~0.1 s per
    step). nanoGPT's shakespeare-char uses 6 layers, 6 heads, 384 wide, block 256, batch 64,
    dropout 0.2 and 5000 steps and reaches val loss ~1.47: ``--set n_layer=6 n_head=6
    n_embd=384 block_size=256 batch_size=64 steps_per_epoch=500 --epochs 10 --device cuda``.
    ``scheduled``: curriculum dropout (Morerio et al. 2017) whose rate reaches 99.3% of p
    halfway through training."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 64
    batch_size: int = 32
    steps_per_epoch: int = 200
    eval_windows: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    n_chars: int | None = None

    def __post_init__(self) -> None:
        check_settings(self, positive=("n_layer", "n_head", "n_embd", "block_size", "batch_size",
                                       "steps_per_epoch", "eval_windows", "lr", "n_chars"),
                       nonnegative=("weight_decay",))  # fmt: skip


def train(ctx: TrialContext) -> dict[str, float]:
    s: Settings = ctx.settings
    corpus = shakespeare(ctx, s.n_chars)
    variant = "standout" if ctx.variant == "standout" else "standard"
    model = CharGPT(corpus.vocab_size, s.block_size, s.n_layer, s.n_head, s.n_embd, p=ctx.p,
                    variant=variant)  # fmt: skip
    optimizer = torch.optim.AdamW(param_groups(model, s.weight_decay), lr=s.lr,
                                  betas=(0.9, 0.99))  # fmt: skip
    schedulers = []
    if ctx.variant == "scheduled":
        total = ctx.epochs * s.steps_per_epoch
        schedulers.append(DropoutScheduler(model, curriculum(10.0 / total)))
    return run_lm(ctx, corpus, model, optimizer, block_size=s.block_size,
                  batch_size=s.batch_size, steps_per_epoch=s.steps_per_epoch,
                  eval_windows_count=s.eval_windows, schedulers=schedulers)  # fmt: skip


RECIPE = register(Recipe(
    name="transformer-lm",
    summary="char GPT on Tiny Shakespeare: dropout on embeddings/attention/FFN/residuals: none "
    "vs standard vs Standout vs scheduled",
    source="nanoGPT shakespeare-char (Karpathy) (dropout 0.2, val loss ~1.47)",
    data="Tiny Shakespeare (1.1M characters), first 90% train / last 10% validation",
    task="lm", settings=Settings, train=train, default_rates=(0.0, 0.2), default_epochs=6,
    variants=("standard", "standout", "scheduled"), columns=LM_COLUMNS, curves=LM_CURVES,
    sweep_metric=("val_loss", "validation loss (nats/char)"),
))  # fmt: skip
