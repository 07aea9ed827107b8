"""Concrete dropout (Gal, Hron & Kendall 2017) regression on the UCI splits, resumable.

The network of the MC-dropout UCI protocol (``dropkit.experiments.uci_mc``) with the fixed-rate
dropout replaced by learned Concrete dropout in front of each linear layer:
``ConcreteDropout(Linear(d, 50)) -> ReLU -> ConcreteDropout(Linear(50, 1))`` (p_init 0.1,
temperature 0.1, homoscedastic output). Inputs and targets are standardised with the training
split's statistics. Loss: mean squared error on the standardised targets plus
``dropkit.regularization(model)``, with the regularisers of ``concrete_regularizers(l, tau, N)``,
``w_r = l^2 / (tau N)``, ``d_r = 2 / (tau N)``. Defaults ``l = 1e-4``, ``tau = 1`` (in standardised
units) give the Keras reference notebook's ``w_r = l^2 / N``, ``d_r = 2 / N``. Adam lr 1e-3, batch
128, ``--epochs`` full passes (no grid search, no validation split: p is learned).

Test: T MC samples (``--mc-samples``) with the Concrete masks on (train mode, as the reference
code samples), mapped back to the original units; RMSE of the MC mean, and the test
log-likelihood ``logsumexp_t(-tau/2 (y - y_t)^2) - log T - log(2 pi)/2 + log(tau)/2`` with tau
the middle value of the dataset's tau grid in the MC-dropout protocol (original units; not
tuned). Each finished split is appended to ``--out`` as one JSON line, and ``--resume`` skips the
splits already there; the final table gives the mean +- standard error over splits of the learned
p of each layer, RMSE and log-likelihood, next to Gal & Ghahramani 2016's MC-dropout Table 1
(for context only: a different method and 20 splits).

    .venv/bin/python bench/concrete_uci.py --datasets yacht energy concrete --splits 5 \\
        --epochs 1000 --out runs/concrete_uci.jsonl --resume
"""

from __future__ import annotations

import argparse
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
from dropkit.experiments.uci_mc import PAPER_TABLE1
from dropkit.nn.learned import ConcreteDropout, concrete_regularizers, dropout_rates, regularization

LAYERS = ("0", "2")  # module paths of the two ConcreteDropout wrappers: input, hidden


def standardise(train: np.ndarray, *others: np.ndarray):
    mean, std = train.mean(0), train.std(0)
    std = np.where(std == 0, 1.0, std)
    return [(a - mean) / std for a in (train, *others)], mean, std


def build_net(d: int, hidden: int, wr: float, dr: float, p_init: float) -> nn.Sequential:
    def cd(layer: nn.Module) -> ConcreteDropout:
        return ConcreteDropout(layer, p_init=p_init, weight_regularizer=wr, dropout_regularizer=dr)

    return nn.Sequential(cd(nn.Linear(d, hidden)), nn.ReLU(), cd(nn.Linear(hidden, 1)))


def run_split(args, name: str, split: int, train_idx, test_idx, x, y) -> dict:
    info = get_dataset(name)
    (xs, xt), _, _ = standardise(x[train_idx], x[test_idx])
    (ys,), y_mean, y_std = standardise(y[train_idx])
    n = len(xs)
    wr, dr = concrete_regularizers(args.lengthscale, args.reg_tau, n)
    torch.manual_seed(args.seed + split)
    net = build_net(xs.shape[1], info.n_hidden, wr, dr, args.p_init).double()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    xtr, ytr = torch.from_numpy(xs), torch.from_numpy(ys)[:, None]
    net.train()
    for _ in range(args.epochs):
        for idx in torch.randperm(n).split(args.batch_size):
            loss = nn.functional.mse_loss(net(xtr[idx]), ytr[idx]) + regularization(net)
            opt.zero_grad()
            loss.backward()
            opt.step()
    p = {k: float(v["p"]) for k, v in dropout_rates(net).items()}
    # MC prediction: all T samples in one batch (T * n_test rows), masks on.
    samples, xte = args.mc_samples, torch.from_numpy(xt)
    with torch.no_grad():
        draws = net(xte.repeat(samples, 1)).view(samples, len(xt)) * float(y_std) + float(y_mean)
    target = torch.from_numpy(y[test_idx])
    rmse = float(torch.sqrt(((draws.mean(0) - target) ** 2).mean()))
    tau = info.tau_grid[len(info.tau_grid) // 2]
    ll = (torch.logsumexp(-0.5 * tau * (target - draws) ** 2, 0) - math.log(samples)
          - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau))  # fmt: skip
    return {"p_input": p[LAYERS[0]], "p_hidden": p[LAYERS[1]], "rmse": rmse,
            "log_likelihood": float(ll.mean()), "tau": tau, "n_train": n,
            "weight_regularizer": wr, "dropout_regularizer": dr}  # fmt: skip


def config_of(args) -> dict:
    return {"epochs": args.epochs, "lengthscale": args.lengthscale, "reg_tau": args.reg_tau,
            "p_init": args.p_init, "lr": args.lr, "batch_size": args.batch_size,
            "mc_samples": args.mc_samples, "seed": args.seed}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["yacht", "energy", "concrete"],
                        choices=sorted(PAPER_TABLE1))  # fmt: skip
    parser.add_argument("--splits", type=int, default=5, help="first N splits (0: all)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--lengthscale", type=float, default=1e-4, help="prior length-scale l")
    parser.add_argument("--reg-tau", type=float, default=1.0, help="tau in w_r, d_r (std. units)")
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
            print(f"{name} split {i}: p {result['p_input']:.4f} / {result['p_hidden']:.4f} "
                  f"rmse {result['rmse']:.3f} ll {result['log_likelihood']:.3f} "
                  f"({rec['seconds']:.0f}s)", flush=True)  # fmt: skip
    print(table(done.values(), config))
    return 0


def table(records, config: dict) -> str:
    """Markdown table: mean +- s.e. over splits per dataset, the paper's MC dropout beside."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["dataset"], []).append(r)

    def stat(rs: list[dict], key: str, digits: int) -> str:
        a = np.array([r[key] for r in rs])
        se = a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
        return f"{a.mean():.{digits}f} ± {se:.{digits}f}"

    lines = [
        "| dataset | epochs | splits | p input (learned) | p hidden (learned) | RMSE "
        "| test LL (τ) | MC dropout 2016 RMSE / LL |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, rs in groups.items():
        rmse, ll = PAPER_TABLE1[name]
        lines.append(
            f"| {name} | {config['epochs']} | {len(rs)} | {stat(rs, 'p_input', 4)} | "
            f"{stat(rs, 'p_hidden', 4)} | {stat(rs, 'rmse', 3)} | "
            f"{stat(rs, 'log_likelihood', 3)} ({rs[0]['tau']:g}) | {rmse:.2f} / {ll:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
