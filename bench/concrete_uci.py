"""Concrete dropout (Gal, Hron & Kendall 2017) regression on the UCI splits, resumable.

The UCI network of the paper (section 5.2: hidden layers of 50 units, ReLU; ``--hidden-layers``,
default 2) with learned Concrete dropout in front of every linear layer:
``CD(Linear(d, 50)) -> ReLU -> CD(Linear(50, 50)) -> ReLU -> CD(Linear(50, 1))`` (p_init 0.1,
temperature 0.1, homoscedastic output). Inputs and targets are standardised with the training
split's statistics. Loss: mean squared error on the standardised targets plus
``dropkit.regularization(model)``, with the regularisers of ``concrete_regularizers(l, tau, N)``,
``w_r = l^2 / (tau N)``, ``d_r = 2 / (tau N)``, prior length-scale ``l = 1e-4`` (the reference
notebook's). The model precision ``tau`` is the middle value of the dataset's tau grid in the
MC-dropout protocol (Gal & Ghahramani 2016, original units), converted to standardised units
(``tau * std(y_train)^2``), so that the regulariser and the test log-likelihood assume the same
noise (``--reg-tau T`` fixes it instead, in standardised units). Adam lr 1e-3, batch 128,
``--steps`` Adam steps (whole epochs, at least that many; or ``--epochs``), no grid search and
no validation split: p is learned.

Convergence: the learned p of every layer is recorded 20 times during training, and the table
gives, per layer, how far ``logit(p)`` moved over the last quarter of the steps. A hidden-layer
rate that has settled moves by a few hundredths; the input-layer rate goes to zero (the paper's
observation on every UCI dataset), so its logit keeps falling, ever more slowly, and its p is
reported as a value, not a limit.

Test: T MC samples (``--mc-samples``) with the Concrete masks on (train mode, as the reference
code samples), mapped back to the original units; RMSE of the MC mean, and the test
log-likelihood ``logsumexp_t(-tau/2 (y - y_t)^2) - log T - log(2 pi)/2 + log(tau)/2`` with tau
the middle value of the dataset's tau grid in the MC-dropout protocol (original units; not
tuned). Each finished split is appended to ``--out`` as one JSON line, and ``--resume`` skips the
splits already there; the final table gives the mean +- standard error over splits of the learned
p of each layer, RMSE and log-likelihood, next to Gal & Ghahramani 2016's MC-dropout Table 1
(for context only: a different method and 20 splits).

    .venv/bin/python bench/concrete_uci.py --datasets yacht energy concrete --splits 5 \\
        --steps 40000 --out runs/concrete_uci.jsonl --resume
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dropkit.data import get_dataset, load_uci, uci_splits
from dropkit.experiments.uci_mc import PAPER_TABLE1, regression_scores, standardise
from dropkit.nn.learned import ConcreteDropout, concrete_regularizers, dropout_rates, regularization

#: Points at which the learned rates are recorded (fractions of training, the last is the end).
CHECKPOINTS = 20


def build_net(d: int, hidden: int, layers: int, wr: float, dr: float, p_init: float):
    """``CD(Linear) -> ReLU`` ``layers`` times, then ``CD(Linear(hidden, 1))``."""

    def cd(layer: nn.Module) -> ConcreteDropout:
        return ConcreteDropout(layer, p_init=p_init, weight_regularizer=wr, dropout_regularizer=dr)

    widths = [d] + [hidden] * layers
    body: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        body += [cd(nn.Linear(a, b)), nn.ReLU()]
    return nn.Sequential(*body, cd(nn.Linear(widths[-1], 1)))


def epochs_for(args, n: int) -> int:
    """``--epochs``, or enough whole epochs for ``--steps`` Adam steps on ``n`` rows."""
    if args.epochs:
        return args.epochs
    return math.ceil(args.steps / math.ceil(n / args.batch_size))


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def run_split(args, name: str, split: int, train_idx, test_idx, x, y) -> dict:
    info = get_dataset(name)
    (xs, xt), _, _ = standardise(x[train_idx], x[test_idx])
    (ys,), y_mean, y_std = standardise(y[train_idx])
    n = len(xs)
    tau = info.tau_grid[len(info.tau_grid) // 2]  # original units, as in the test LL
    reg_tau = args.reg_tau or tau * float(y_std) ** 2
    wr, dr = concrete_regularizers(args.lengthscale, reg_tau, n)
    torch.manual_seed(args.seed + split)
    net = build_net(xs.shape[1], info.n_hidden, args.hidden_layers, wr, dr, args.p_init).double()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    xtr, ytr = torch.from_numpy(xs), torch.from_numpy(ys)[:, None]
    epochs = epochs_for(args, n)
    marks = {math.ceil(epochs * (k + 1) / CHECKPOINTS) for k in range(CHECKPOINTS)}
    trajectory = []  # (epoch, [p per layer]) at each mark
    net.train()
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(n).split(args.batch_size):
            loss = nn.functional.mse_loss(net(xtr[idx]), ytr[idx]) + regularization(net)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in marks:
            trajectory.append((epoch, [float(v["p"]) for v in dropout_rates(net).values()]))
    p = trajectory[-1][1]
    # How far each layer's logit(p) moved over the last quarter of training.
    quarter = next(ps for e, ps in trajectory if e >= 0.75 * epochs)
    drift = [logit(b) - logit(a) for a, b in zip(quarter, p, strict=True)]
    # MC prediction: all T samples in one batch (T * n_test rows), masks on.
    samples, xte = args.mc_samples, torch.from_numpy(xt)
    with torch.no_grad():
        draws = net(xte.repeat(samples, 1)).view(samples, len(xt)) * float(y_std) + float(y_mean)
    rmse, ll = regression_scores(draws, torch.from_numpy(y[test_idx]), tau)
    return {"p": p, "logit_drift": drift, "trajectory": trajectory, "epochs": epochs,
            "steps": epochs * math.ceil(n / args.batch_size), "rmse": rmse,
            "log_likelihood": ll, "tau": tau, "reg_tau": reg_tau, "n_train": n,
            "weight_regularizer": wr, "dropout_regularizer": dr}  # fmt: skip


def config_of(args) -> dict:
    return {"epochs": args.epochs, "steps": args.steps, "hidden_layers": args.hidden_layers,
            "lengthscale": args.lengthscale, "reg_tau": args.reg_tau,
            "p_init": args.p_init, "lr": args.lr, "batch_size": args.batch_size,
            "mc_samples": args.mc_samples, "seed": args.seed}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["yacht", "energy", "concrete"],
                        choices=sorted(PAPER_TABLE1))  # fmt: skip
    parser.add_argument("--splits", type=int, default=5, help="first N splits (0: all)")
    parser.add_argument("--steps", type=int, default=40_000, help="Adam steps (whole epochs)")
    parser.add_argument("--epochs", type=int, help="epochs (overrides --steps)")
    parser.add_argument("--hidden-layers", type=int, default=2)
    parser.add_argument("--lengthscale", type=float, default=1e-4, help="prior length-scale l")
    parser.add_argument("--reg-tau", type=float, help="tau in w_r, d_r (std. units; default: grid)")
    parser.add_argument("--p-init", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mc-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data", default=os.environ.get("DROPKIT_DATA"), help="data root")
    parser.add_argument("--out", default="runs/concrete_uci.jsonl")
    parser.add_argument("--resume", action="store_true", help="skip splits already in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = config_of(args)
    done: dict[tuple[str, int], dict] = {}
    if args.resume and out.exists():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            if rec["config"] == config:
                done[(rec["dataset"], rec["split"])] = rec
    elif out.exists():
        out.unlink()
    for name in args.datasets:
        x, y = load_uci(name, args.data)
        splits = uci_splits(len(y), get_dataset(name).n_splits)
        for i, (train, test) in enumerate(splits[: args.splits or None]):
            if (name, i) in done:
                continue
            start = time.perf_counter()
            result = run_split(args, name, i, train, test, x, y)
            rec = {"dataset": name, "split": i, "config": config,
                   "seconds": time.perf_counter() - start, **result}  # fmt: skip
            with open(out, "a") as handle:  # one line per split, flushed at once
                handle.write(json.dumps(rec) + "\n")
            done[(name, i)] = rec
            rates = " / ".join(f"{v:.4f}" for v in result["p"])
            print(f"{name} split {i}: p {rates} rmse {result['rmse']:.3f} "
                  f"ll {result['log_likelihood']:.3f} ({rec['seconds']:.0f}s)",
                  flush=True)  # fmt: skip
    print(table(done.values()))
    return 0


def table(records) -> str:
    """Markdown table: mean +- s.e. over splits per dataset of each layer's learned p and of
    its logit drift over the last quarter, RMSE and log-likelihood; the paper's MC dropout
    (Gal & Ghahramani 2016, Table 1) beside for context."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["dataset"], []).append(r)

    def stat(values: list[float], digits: int, style: str = "f") -> str:
        a = np.array(values)
        se = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
        return f"{a.mean():.{digits}{style}} ± {se:.{digits}{style}}"

    depth = max(len(r["p"]) for r in records)
    names = ["input"] + [f"hidden {k}" for k in range(1, depth)]
    lines = [
        "| dataset | steps | splits | "
        + " | ".join(f"p {k}" for k in names)
        + " | logit drift, last quarter | RMSE | test LL (τ) | MC dropout 2016 RMSE / LL |",
        "| --- | ---: | ---: | " + "---: | " * depth + "--- | ---: | ---: | ---: |",
    ]
    for name, rs in groups.items():
        rmse, ll = PAPER_TABLE1[name]
        rates = " | ".join(stat([r["p"][k] for r in rs], 2, "g") for k in range(depth))
        drift = " / ".join(
            f"{np.mean([r['logit_drift'][k] for r in rs]):+.2f}" for k in range(depth)
        )
        lines.append(
            f"| {name} | {rs[0]['steps']} | {len(rs)} | {rates} | {drift} | "
            f"{stat([r['rmse'] for r in rs], 3, 'g')} | "
            f"{stat([r['log_likelihood'] for r in rs], 3)} ({rs[0]['tau']:g}) | "
            f"{rmse:.2f} / {ll:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
