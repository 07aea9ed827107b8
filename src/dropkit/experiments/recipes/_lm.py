"""Training and scoring shared by the character language-model recipes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dropkit.data import CharCorpus, load_tiny_shakespeare

from ..lm import LMBatches, eval_windows, evaluate_lm, lm_loss, perplexity
from ..recipe import TrialContext
from ..trainer import Stateful, fit


def shakespeare(ctx: TrialContext, n_chars: int | None) -> CharCorpus:
    """Tiny Shakespeare split 90/10 as nanoGPT does (optionally only its first ``n_chars``)."""
    text = load_tiny_shakespeare(ctx.data_path)
    return CharCorpus.from_text(text[:n_chars] if n_chars else text)


def run_lm(
    ctx: TrialContext,
    corpus: CharCorpus,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    block_size: int,
    batch_size: int,
    steps_per_epoch: int,
    eval_windows_count: int,
    schedulers: Sequence[Stateful] = (),
    max_grad_norm: float | None = 1.0,
) -> dict[str, float]:
    """Train for ``ctx.epochs`` epochs, score train/val loss every epoch, return the summary."""
    device = ctx.device
    model.to(device)
    val = eval_windows(corpus.val, block_size, eval_windows_count)
    train_eval = eval_windows(corpus.train, block_size, eval_windows_count)

    def evaluate(net: nn.Module) -> dict[str, float]:
        val_loss = evaluate_lm(net, val, batch_size, device)
        train_loss = evaluate_lm(net, train_eval, batch_size, device)
        return {"train_loss_eval": train_loss, "val_loss": val_loss,
                "gap": val_loss - train_loss, "val_ppl": perplexity(val_loss)}  # fmt: skip

    batches = LMBatches(corpus.train, block_size, batch_size, steps_per_epoch, ctx.seed, device)
    records = fit(ctx, model, optimizer, batches, len(batches), lm_loss, evaluate,
                  schedulers=schedulers, max_grad_norm=max_grad_norm)  # fmt: skip
    last = records[-1]
    best = min(r["val_loss"] for r in records)
    return {"train_loss_eval": last["train_loss_eval"], "val_loss": last["val_loss"],
            "gap": last["gap"], "val_ppl": last["val_ppl"],
            "val_bpc": last["val_loss"] / math.log(2), "best_val_loss": best}  # fmt: skip
