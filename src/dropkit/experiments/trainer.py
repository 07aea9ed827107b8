"""The training loop shared by the torch recipes: epochs, checkpoints, resume, progress, metrics.

:func:`fit` trains one trial for ``ctx.epochs`` epochs. After every epoch it evaluates, appends
the epoch's record to ``metrics.jsonl``, then saves a checkpoint (model, optimiser, schedulers,
torch's RNG state). In that order a run killed between the two writes has one record more than
its checkpoint; :meth:`TrialDir.truncate` drops it on resume and the epoch is redone, so every
epoch appears exactly once. Each epoch's data order comes from a generator seeded by
``(seed, epoch)`` and the dropout masks from torch's global generator, restored from the
checkpoint, so a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dropkit import mc
from dropkit.metrics import brier_score, expected_calibration_error, negative_log_likelihood
from dropkit.metrics._optional import require

from . import distributed
from .recipe import TrialContext, derive_seed
from .runs import CheckpointError, TrialDir

__all__ = [
    "ArrayBatches",
    "classification_summary",
    "epoch_generator",
    "evaluate_classifier",
    "fit",
    "run_classifier",
    "sampled",
]


class Stateful(Protocol):
    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for epoch ``epoch``'s data order, independent of everything before it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class ArrayBatches:
    """Shuffled mini-batches ``(x[idx], y[idx])`` of in-memory tensors, one epoch per call."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __call__(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), generator=epoch_generator(self.seed, epoch))
        for idx in order.split(self.batch_size):
            yield self.x[idx], self.y[idx]


def _bar(ctx: TrialContext, total: int, initial: int):
    if not ctx.progress:
        return None
    tqdm = require("tqdm.auto", "progress bars (or pass --no-progress)").tqdm

    return tqdm(total=total, initial=initial, desc=ctx.label, unit="step", leave=True,
                dynamic_ncols=True)  # fmt: skip


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


#: What :func:`fit` stores in a trial's checkpoint besides the epoch.
CHECKPOINT_KEYS = ("model", "optimizer", "schedulers", "rng")


def fit(
    ctx: TrialContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    steps_per_epoch: int,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    *,
    after_step: Callable[[nn.Module], None] | None = None,
    schedulers: Sequence[Stateful] = (),
    max_grad_norm: float | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``ctx.epochs`` epochs (resuming when ``ctx.resume``); the records.

    Each step: ``loss = loss_fn(model, batch)`` in training mode, backward, optional gradient
    clipping, ``optimizer.step()``, ``after_step(model)`` (e.g. a max-norm projection), then
    ``step()`` on every scheduler (LR or dropout schedules, saved in the checkpoint). After the
    epoch ``evaluate(model)`` (called in eval mode under ``no_grad``) gives the metrics recorded
    with ``epoch``, ``train_loss`` (mean training-mode loss of the epoch's steps) and
    ``time_s``.
    """
    # Reseeded here so the masks of a trial do not depend on how many draws its model's
    # initialisation took; a resumed trial replaces this state with the checkpoint's.
    torch.manual_seed(ctx.seed)
    start = 0
    trial = ctx.trial
    # Under torchrun: DDP, each rank its rows of every batch, world-size-invariant masks.
    dp = distributed.DataParallelFit(model, ctx.seed, ctx.device) if distributed.current() else None
    state = trial.load_checkpoint(CHECKPOINT_KEYS) if ctx.resume else None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for scheduler, saved in zip(schedulers, state["schedulers"], strict=True):
                scheduler.load_state_dict(saved)
            _set_rng_state(state["rng"], ctx.device)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            reason = f"does not fit this trial: {type(error).__name__}"
            raise CheckpointError(trial.file(TrialDir.CHECKPOINT), reason) from None
        start = int(state["epoch"])
        if dp is not None and "stream" in state:
            dp.stream.load_state_dict(state["stream"])
    trial.truncate(start)
    bar = _bar(ctx, ctx.epochs * steps_per_epoch, start * steps_per_epoch)
    try:
        for epoch in range(start + 1, ctx.epochs + 1):
            began = time.perf_counter()
            model.train()
            total, count = 0.0, 0
            for batch in batches(epoch):
                if dp is None:
                    loss = step_loss = loss_fn(model, batch)
                else:
                    with dp.stream:
                        step_loss = loss_fn(dp.ddp, dp.local(batch)) * dp.weight()
                    loss = dp.global_mean(step_loss / dp.weight())
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{ctx.label}: the training loss became {loss.item()} in epoch {epoch}; "
                        "lower the learning rate (--set lr=...)"
                    )
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                if max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                if after_step is not None:
                    after_step(model)
                for scheduler in schedulers:
                    scheduler.step()
                total, count = total + loss.item(), count + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"epoch {epoch} loss {loss.item():.3f}", refresh=False)
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model)
            record = {"epoch": epoch, "train_loss": total / max(count, 1), **metrics,
                      "time_s": round(time.perf_counter() - began, 3)}  # fmt: skip
            trial.append_metrics(record)
            trial.save_checkpoint({
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedulers": [s.state_dict() for s in schedulers],
                "rng": _rng_state(ctx.device),
                **({"stream": dp.stream.state_dict()} if dp is not None else {}),
            })  # fmt: skip
            if ctx.on_epoch is not None:
                ctx.on_epoch(record)
    finally:
        if bar is not None:
            bar.close()
        if dp is not None:
            dp.stream.close()
    model.eval()
    return trial.metrics()


def _chunks(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float, torch.Tensor]:
    """(mean cross-entropy, accuracy, probabilities ``(N, K)``) of ``model`` as it is set."""
    probs = torch.cat([F.softmax(model(x[s]).double(), -1) for s in _chunks(len(x), batch_size)])
    labels = y.to(probs.device)
    nll = -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).mean()
    return float(nll), float((probs.argmax(1) == labels).double().mean()), probs.cpu()


def sampled(model: nn.Module) -> bool:
    """Whether MC dropout would sample anything (some dropout module with a rate > 0)."""
    return any((mc.modes.drop_rate(m) or 0.0) > 0 for m in model.modules()
               if mc.modes.is_dropout_module(m))  # fmt: skip


def classification_summary(
    ctx: TrialContext,
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    mc_samples: int,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Final metrics of a classifier; saves the MC predictions; returns the summary.

    Deterministic (dropout off): train/test accuracy, their gap, test NLL, ECE (15 equal-width
    bins). MC dropout (``mc_samples`` passes, seed ``ctx.seed``): accuracy, NLL, Brier score and
    ECE of the mean prediction. With every rate 0 the MC values equal the deterministic ones.
    """
    model.eval()
    _, train_acc, _ = evaluate_classifier(model, *train, batch_size)
    nll, test_acc, probs = evaluate_classifier(model, *test, batch_size)
    labels = test[1].cpu().numpy()
    stochastic = sampled(model)
    if stochastic and mc_samples > 0:
        chunk = max(1, 2_000_000 // max(1, batch_size * probs.shape[1]))
        # one unrelated seed per (trial seed, chunk): seed + i would repeat across trials
        parts = [mc.predict(model, test[0][s], mc_samples, seed=derive_seed(ctx.seed, i),
                            chunk_size=chunk).mean.double().cpu()
                 for i, s in enumerate(_chunks(len(test[0]), batch_size))]  # fmt: skip
        mc_probs = torch.cat(parts)
    else:
        mc_probs = probs
    p_np, mc_np = probs.numpy(), mc_probs.numpy()
    mc_np = mc_np / mc_np.sum(1, keepdims=True)  # float sums of T softmaxes drift by ~1e-16
    ctx.trial.save_predictions(probs=mc_np.astype(np.float32), det_probs=p_np.astype(np.float32),
                               labels=labels)  # fmt: skip
    return {
        "train_acc": train_acc,
        "test_acc": test_acc,
        "gap": train_acc - test_acc,
        "nll": nll,
        "ece": expected_calibration_error(p_np, labels),
        "mc_acc": float((mc_np.argmax(1) == labels).mean()),
        "mc_nll": negative_log_likelihood(mc_np, labels),
        "mc_brier": brier_score(mc_np, labels),
        "mc_ece": expected_calibration_error(mc_np, labels),
        "mc_samples": mc_samples if stochastic else 0,
    }


def run_classifier(
    ctx: TrialContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    mc_samples: int,
    after_step: Callable[[nn.Module], None] | None = None,
    schedulers: Sequence[Stateful] = (),
    eval_train_limit: int = 10_000,
) -> dict[str, float]:
    """Train a classifier with cross-entropy and return :func:`classification_summary`.

    Per epoch it records ``train_loss`` (training mode, dropout on), and in eval mode
    ``train_acc``/``train_eval_loss`` on (up to ``eval_train_limit`` of) the training set and
    ``test_loss``/``test_acc`` on the test set.
    """
    device = ctx.device
    train = (train[0].to(device), train[1].to(device))
    test = (test[0].to(device), test[1].to(device))
    model.to(device)
    head = (train[0][:eval_train_limit], train[1][:eval_train_limit])

    def evaluate(net: nn.Module) -> dict[str, float]:
        train_loss, train_acc, _ = evaluate_classifier(net, *head)
        test_loss, test_acc, _ = evaluate_classifier(net, *test)
        return {"train_eval_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                "test_acc": test_acc}  # fmt: skip

    batches = ArrayBatches(*train, batch_size, ctx.seed)
    fit(ctx, model, optimizer, batches, len(batches),
        lambda net, batch: F.cross_entropy(net(batch[0]), batch[1]), evaluate,
        after_step=after_step, schedulers=schedulers)  # fmt: skip
    return classification_summary(ctx, model, train, test, mc_samples)


#: Results table and curves of the classification recipes.
CLASSIFICATION_COLUMNS = (
    ("train_acc", "train acc"), ("test_acc", "test acc"), ("gap", "gap"), ("nll", "test NLL"),
    ("mc_acc", "MC acc"), ("mc_nll", "MC NLL"), ("mc_ece", "MC ECE"),
)  # fmt: skip
CLASSIFICATION_CURVES = (
    {"title": "loss", "ylabel": "cross-entropy",
     "keys": {"train_loss": "train (dropout on)", "test_loss": "test"}},
    {"title": "accuracy", "ylabel": "accuracy",
     "keys": {"train_acc": "train", "test_acc": "test"}},
)  # fmt: skip
