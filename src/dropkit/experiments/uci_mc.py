"""MC dropout regression on the UCI benchmark, with the protocol of Gal & Ghahramani (2016).

"Dropout as a Bayesian Approximation" (ICML 2016, arXiv:1506.02142), section 5.2 and Table 1,
following the experiments' published procedure:

* inputs and targets standardised with the training split's mean and std;
* network ``Dropout(p) -> Linear(d, H) -> ReLU -> Dropout(p) -> Linear(H, 1)`` (H = 50, 100 for
  protein), trained with Adam (lr 1e-3), batch 128, for the dataset's epoch count, on the mean
  squared error plus the weight decay ``lambda * ||W||^2`` with
  ``lambda = l^2 (1 - p) / (2 N tau)``, prior length-scale ``l = 1e-2`` (weights only);
* ``p`` and the model precision ``tau`` chosen from the dataset's grids by the test
  log-likelihood on a validation set (the last 20% of the training split), then the network is
  retrained on the whole training split;
* test RMSE of the MC mean and test log-likelihood
  ``logsumexp_t(-tau/2 (y - y_t)^2) - log T - log(2 pi)/2 + log(tau)/2`` in the original units,
  with T MC samples (10,000 in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dropkit import mc
from dropkit import nn as dkn
from dropkit.data import get_dataset, load_uci, uci_splits
from dropkit.mc.result import summarize

from .recipe import derive_seed

#: Gal & Ghahramani (2016), Table 1, "Dropout" columns: (RMSE, test log-likelihood).
PAPER_TABLE1 = {
    "concrete": (5.23, -3.04),
    "energy": (1.66, -1.99),
    "kin8nm": (0.10, 0.95),
    "naval-propulsion-plant": (0.01, 3.80),
    "power-plant": (4.02, -2.80),
    "protein-tertiary-structure": (4.36, -2.89),
    "wine-quality-red": (0.62, -0.93),
    "yacht": (1.11, -1.55),
}


@dataclass(frozen=True)
class UCIConfig:
    """One run of the protocol; ``None`` fields take the dataset's published values."""

    dataset: str = "concrete"
    splits: int | None = None
    epochs: int | None = None
    epochs_multiplier: int = 1
    mc_samples: int = 10_000
    lengthscale: float = 1e-2
    batch_size: int = 128
    lr: float = 1e-3
    validation_fraction: float = 0.2
    seed: int = 0
    data_path: str | None = None
    #: Dropout rates searched (None: the dataset's published grid); ``(0.0,)`` runs without.
    dropout_grid: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SplitResult:
    split: int
    p: float
    tau: float
    rmse: float
    log_likelihood: float


def standardise(train: np.ndarray, *others: np.ndarray):
    """``(arrays - mean) / std`` with the first array's statistics: ``(arrays, mean, std)``."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std == 0, 1.0, std)  # constant columns (naval) stay finite
    return [(a - mean) / std for a in (train, *others)], mean, std


def build_net(n_features: int, n_hidden: int, p: float) -> nn.Sequential:
    """``Dropout(p) -> Linear -> ReLU -> Dropout(p) -> Linear(., 1)`` as in the paper's code."""
    return nn.Sequential(
        dkn.Dropout(p), nn.Linear(n_features, n_hidden), nn.ReLU(), dkn.Dropout(p),
        nn.Linear(n_hidden, 1),
    )  # fmt: skip


def fit(x: np.ndarray, y: np.ndarray, p: float, tau: float, n_hidden: int, epochs: int,
        config: UCIConfig, seed: int) -> nn.Sequential:  # fmt: skip
    """Train on standardised ``x``/``y`` with the paper's weight decay for ``(p, tau)``."""
    torch.manual_seed(seed)
    net = build_net(x.shape[1], n_hidden, p).double()
    decay = config.lengthscale**2 * (1 - p) / (2 * len(x) * tau)
    weights = [m.weight for m in net if isinstance(m, nn.Linear)]
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)[:, None]
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(config.batch_size):
            loss = nn.functional.mse_loss(net(xt[idx]), yt[idx])
            loss = loss + decay * sum(w.pow(2).sum() for w in weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def evaluate(net: nn.Module, x: np.ndarray, y: np.ndarray, y_mean: float, y_std: float,
             tau: float, samples: int, seed: int) -> tuple[float, float]:  # fmt: skip
    """(RMSE of the MC mean, mean test log-likelihood), both in the original units of y."""
    if all(m.p == 0 for m in net.modules() if isinstance(m, dkn.Dropout)):
        samples = 1  # no dropout: every sample would be the same, one pass is the prediction
        net.eval()
        with torch.no_grad():
            outputs = net(torch.from_numpy(x))[None]
    else:
        outputs = mc.predict(
            net,
            torch.from_numpy(x),
            samples,
            task="regression",
            seed=seed,
            chunk_size=max(1, 2_000_000 // max(1, len(x))),
        ).samples
    draws = outputs[..., 0].double() * float(y_std) + float(y_mean)  # (T, N)
    return regression_scores(draws, torch.from_numpy(y), tau)


def regression_scores(draws: torch.Tensor, target: torch.Tensor, tau: float) -> tuple[float, float]:
    """(RMSE of the MC mean, mean test log-likelihood) of MC draws ``(T, N)`` against ``(N,)``
    targets, the log-likelihood being :class:`dropkit.mc.MCResult`'s under precision ``tau``."""
    result = summarize(draws, "regression", "given", tau=tau, targets=target)
    rmse = float(torch.sqrt(((result.mean - target) ** 2).mean()))
    return rmse, float(result.log_likelihood)


def run_split(config: UCIConfig, split: int, train_idx, test_idx, x, y) -> SplitResult:
    """Grid search on a validation split, retrain on the whole training split, test."""
    info = get_dataset(config.dataset)
    epochs = (config.epochs or info.n_epochs) * config.epochs_multiplier
    n_val = round(config.validation_fraction * len(train_idx))
    inner, val = train_idx[:-n_val], train_idx[-n_val:]
    best = None
    # seeds per (run seed, split): seed + split would repeat split k of seed s as split k - 1
    # of seed s + 1; the MC draws get a stream of their own
    fit_seed, mc_seed = derive_seed(config.seed, split), derive_seed(config.seed, split, 1)
    for p in config.dropout_grid or info.dropout_grid:
        for tau in info.tau_grid:
            (xs, xv), _, _ = standardise(x[inner], x[val])
            (ys, _), ym, ysd = standardise(y[inner], y[val])
            net = fit(xs, ys, p, tau, info.n_hidden, epochs, config, fit_seed)
            _, ll = evaluate(net, xv, y[val], ym, ysd, tau, min(config.mc_samples, 1000), mc_seed)
            if best is None or ll > best[0]:
                best = (ll, p, tau)
    _, p, tau = best
    (xs, xt), _, _ = standardise(x[train_idx], x[test_idx])
    (ys, _), ym, ysd = standardise(y[train_idx], y[test_idx])
    net = fit(xs, ys, p, tau, info.n_hidden, epochs, config, fit_seed)
    rmse, ll = evaluate(net, xt, y[test_idx], ym, ysd, tau, config.mc_samples, mc_seed)
    return SplitResult(split, p, tau, rmse, ll)


def run_uci(
    config: UCIConfig,
    on_split: Callable[[SplitResult], None] | None = None,
    skip: int = 0,
) -> list[SplitResult]:
    """Run every split of ``config.dataset`` (or the first ``config.splits``), from ``skip``."""
    info = get_dataset(config.dataset)
    x, y = load_uci(config.dataset, config.data_path)
    splits = uci_splits(len(y), info.n_splits)[: config.splits or info.n_splits]
    results = []
    for i, (train_idx, test_idx) in enumerate(splits):
        if i < skip:
            continue
        results.append(run_split(config, i, train_idx, test_idx, x, y))
        if on_split is not None:
            on_split(results[-1])
    return results


def summarise(results: list[SplitResult]) -> dict[str, float]:
    """Mean and standard error over splits of RMSE and log-likelihood."""
    rmse = np.array([r.rmse for r in results])
    ll = np.array([r.log_likelihood for r in results])

    def se(a: np.ndarray) -> float:
        return float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")

    return {"rmse": float(rmse.mean()), "rmse_se": se(rmse), "ll": float(ll.mean()),
            "ll_se": se(ll), "splits": len(results)}  # fmt: skip
