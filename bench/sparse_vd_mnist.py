"""Sparse variational dropout on LeNet-300-100 (Molchanov, Ashukha & Vetrov 2017), resumable.

784-300-100-10 MLP of ``SparseVDLinear`` layers with ReLU, trained on the 10,000-digit MNIST
training subset and tested on the official t10k set. Objective: the SGVLB
``N * mean cross-entropy + beta * KL`` (N = 10,000, KL summed over every weight), with beta
annealed linearly from 0 to 1 over ``--anneal-epochs`` (after ``--pretrain-epochs`` at beta = 0);
Adam lr 1e-3, batch 100, pixels scaled to [0, 1]. Evaluation in eval mode: weights with
log alpha >= 3 pruned. ``--baseline`` also trains the same net with ``nn.Linear`` layers and
plain cross-entropy for the same number of epochs.

One JSON line is appended to ``--out`` after every epoch, and the model, optimiser and RNG state
are saved next to it (``<out>.<model>.pt``, written atomically), so ``--resume`` continues an
interrupted run from its last finished epoch. The final table puts the last epoch of each model
next to the paper's full-MNIST (60,000 images) Table 1 numbers.

    .venv/bin/python bench/sparse_vd_mnist.py --epochs 60 --baseline \\
        --out runs/sparse_vd_mnist.jsonl --resume
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dropkit.data.mnist import load_mnist_test, load_mnist_train_subset
from dropkit.nn.learned import SparseVDLinear, compression, regularization, sparsity_report

#: Molchanov et al. 2017, Table 1, LeNet-300-100 on full MNIST: test error (%), compression
#: |W| / |W != 0|, and the fraction of weights kept per layer (784-300, 300-100, 100-10).
PAPER = {"sparse_vd": (1.92, 68.0, (0.011, 0.027, 0.38)), "dense": (1.64, 1.0, (1.0, 1.0, 1.0))}
LAYERS = ("fc1", "fc2", "fc3")


class LeNet300100(nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        linear = SparseVDLinear if sparse else nn.Linear
        self.fc1, self.fc2, self.fc3 = linear(784, 300), linear(300, 100), linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


def beta_at(epoch: int, pretrain: int, anneal: int) -> float:
    """KL weight of (0-based) ``epoch``: 0 while pretraining, then linear up to 1."""
    if epoch < pretrain:
        return 0.0
    return min(1.0, (epoch - pretrain + 1) / anneal) if anneal > 0 else 1.0


@torch.no_grad()
def test_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    batches = zip(x.split(1000), y.split(1000), strict=True)
    wrong = sum(int((model(xb).argmax(1) != yb).sum()) for xb, yb in batches)
    return 100.0 * wrong / len(y)


def save_atomically(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(kind: str, args, data, records: list[dict]) -> None:
    """Train one model (``sparse_vd`` or ``dense``), appending a record per epoch."""
    x_train, y_train, x_test, y_test = data
    n = len(x_train)
    out = Path(args.out)
    ckpt = out.with_name(f"{out.name}.{kind}.pt")
    torch.manual_seed(args.seed)
    model = LeNet300100(sparse=kind == "sparse_vd")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, elapsed = 0, 0.0
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] == config_of(args):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            torch.set_rng_state(state["rng"])
            start_epoch, elapsed = state["epoch"] + 1, state["elapsed"]
            print(f"{kind}: resuming after epoch {state['epoch']}", flush=True)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.perf_counter()
        beta = beta_at(epoch, args.pretrain_epochs, args.anneal_epochs)
        if kind != "sparse_vd":
            beta = 0.0
        model.train()
        sums = np.zeros(3)
        for idx in torch.randperm(n).split(args.batch_size):
            nll = F.cross_entropy(model(x_train[idx]), y_train[idx])
            kl = regularization(model)
            loss = n * nll + beta * kl if kind == "sparse_vd" else nll
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums += (loss.item() * len(idx), nll.item() * len(idx), kl.item() * len(idx))
        seconds = time.perf_counter() - t0
        elapsed += seconds
        err = test_error(model, x_test, y_test)
        rec = {"model": kind, "epoch": epoch + 1, "config": config_of(args), "beta": beta,
               "loss": sums[0] / n, "train_nll": sums[1] / n, "kl": sums[2] / n,
               "test_error": err, "epoch_seconds": seconds, "elapsed": elapsed}  # fmt: skip
        if kind == "sparse_vd":
            rec["sparsity"] = sparsity_report(model)
            rec["compression"] = compression(model)
        with open(out, "a") as handle:  # one line per epoch, flushed at once
            handle.write(json.dumps(rec) + "\n")
        save_atomically({"model": model.state_dict(), "opt": opt.state_dict(),
                         "rng": torch.get_rng_state(), "epoch": epoch, "elapsed": elapsed,
                         "config": config_of(args)}, ckpt)  # fmt: skip
        records.append(rec)
        extra = ""
        if kind == "sparse_vd":
            spars = " ".join(f"{v:.3f}" for v in rec["sparsity"].values())
            comp = rec["compression"]
            extra = f" beta {beta:.2f} kl {rec['kl']:.0f} sparsity {spars} comp {comp:.1f}x"
        print(f"{kind} epoch {epoch + 1}/{args.epochs}: nll {rec['train_nll']:.4f} "
              f"test err {err:.2f}%{extra} ({seconds:.1f}s)", flush=True)  # fmt: skip


def config_of(args) -> dict:
    return {"epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs,
            "anneal_epochs": args.anneal_epochs, "lr": args.lr, "batch_size": args.batch_size,
            "seed": args.seed}  # fmt: skip


def table(records: list[dict], config: dict) -> str:
    """Markdown table of the last epoch of each model next to the paper's Table 1."""
    last: dict[str, dict] = {}
    for r in records:
        if r["config"] == config and r["epoch"] >= last.get(r["model"], {}).get("epoch", 0):
            last[r["model"]] = r
    lines = [
        "| model | train set | epochs | test error % | kept fc1 / fc2 / fc3 | compression "
        "| train time |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for kind in ("sparse_vd", "dense"):
        if kind not in last:
            continue
        r = last[kind]
        if kind == "sparse_vd":
            kept = " / ".join(f"{100 * (1 - r['sparsity'][k]):.1f}%" for k in LAYERS)
            comp = f"{r['compression']:.1f}×"
        else:
            kept, comp = "100% / 100% / 100%", "1×"
        epochs, err, secs = f"{r['epoch']}/{config['epochs']}", r["test_error"], r["elapsed"]
        lines.append(f"| {kind} (dropkit) | MNIST 10k subset | {epochs} | {err:.2f} | {kept} | "
                     f"{comp} | {secs:.0f} s |")  # fmt: skip
        err, comp, kept_paper = PAPER[kind]
        kept = " / ".join(f"{100 * k:.1f}%".replace(".0%", "%") for k in kept_paper)
        lines.append(f"| {kind} (paper, Table 1) | MNIST 60k | — | {err:.2f} | {kept} | "
                     f"{comp:g}× | — |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--pretrain-epochs", type=int, default=0, help="epochs at beta = 0")
    parser.add_argument("--anneal-epochs", type=int, default=10, help="epochs for beta 0 -> 1")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--baseline", action="store_true", help="also train the dense net")
    parser.add_argument("--data", default=os.environ.get("DROPKIT_DATA"), help="data root")
    parser.add_argument("--out", default="runs/sparse_vd_mnist.jsonl")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        out.unlink(missing_ok=True)
    images, labels = load_mnist_train_subset(args.data)
    test_images, test_labels = load_mnist_test(args.data)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)

    data = (tensor(images), torch.from_numpy(labels), tensor(test_images),
            torch.from_numpy(test_labels))  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    for kind in ("sparse_vd", "dense") if args.baseline else ("sparse_vd",):
        train(kind, args, data, records)
    print(table(records, config_of(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
