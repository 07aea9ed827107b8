"""MC-dropout regression on the UCI splits (Gal & Ghahramani 2016 protocol), resumable.

Each finished split is appended to a JSON-lines file at once, so an interrupted run loses at
most the split in progress; ``--resume`` skips the splits already there. The summary table puts
the measured mean +- standard error next to the paper's Table 1.

    .venv/bin/python bench/uci_mc.py --datasets yacht concrete --epochs-multiplier 10 \\
        --out runs/uci_mc.jsonl --resume
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from dropkit.data import DATASETS, get_dataset, load_uci, uci_splits
from dropkit.experiments.uci_mc import PAPER_TABLE1, SplitResult, UCIConfig, run_split, summarise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=sorted(DATASETS), choices=sorted(DATASETS))
    parser.add_argument("--epochs-multiplier", type=int, default=1)
    parser.add_argument("--mc-samples", type=int, default=10_000)
    parser.add_argument("--splits", type=int, help="first N splits only (default: all)")
    parser.add_argument("--data", default=os.environ.get("DROPKIT_DATA"), help="data root")
    parser.add_argument("--out", default="runs/uci_mc.jsonl")
    parser.add_argument("--resume", action="store_true", help="skip splits already in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if args.resume and out.exists():
        for line in out.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["dataset"], rec["epochs_multiplier"], rec["split"])] = rec
    for name in args.datasets:
        info = get_dataset(name)
        config = UCIConfig(name, epochs_multiplier=args.epochs_multiplier,
                           mc_samples=args.mc_samples, data_path=args.data)  # fmt: skip
        x, y = load_uci(name, args.data)
        splits = uci_splits(len(y), info.n_splits)[: args.splits or info.n_splits]
        for i, (train, test) in enumerate(splits):
            if (name, args.epochs_multiplier, i) in done:
                continue
            start = time.perf_counter()
            result = run_split(config, i, train, test, x, y)
            rec = {"dataset": name, "epochs_multiplier": args.epochs_multiplier,
                   "mc_samples": args.mc_samples, "seconds": time.perf_counter() - start,
                   **asdict(result)}  # fmt: skip
            with open(out, "a") as handle:  # one line per split, flushed at once
                handle.write(json.dumps(rec) + "\n")
            done[(name, args.epochs_multiplier, i)] = rec
            print(
                f"{name} split {i}: rmse {result.rmse:.3f} ll {result.log_likelihood:.3f} "
                f"(p={result.p}, tau={result.tau}, {rec['seconds']:.0f}s)",
                flush=True,
            )
    print(table(done.values()))
    return 0


def table(records) -> str:
    """Markdown table: measured RMSE / log-likelihood (mean +- s.e.) next to the paper's."""
    groups: dict[tuple[str, int], list[SplitResult]] = {}
    for r in records:
        keep = {k: r[k] for k in ("split", "p", "tau", "rmse", "log_likelihood")}
        groups.setdefault((r["dataset"], r["epochs_multiplier"]), []).append(SplitResult(**keep))
    lines = [
        "| dataset | epochs | splits | RMSE (dropkit) | RMSE (paper) | test LL (dropkit) "
        "| test LL (paper) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (name, mult), results in sorted(groups.items()):
        s = summarise(results)
        rmse, ll = PAPER_TABLE1[name]
        epochs = get_dataset(name).n_epochs * mult
        lines.append(
            f"| {name} | {epochs} | {s['splits']} | {s['rmse']:.3f} ± {s['rmse_se']:.3f} | "
            f"{rmse:.2f} | {s['ll']:.3f} ± {s['ll_se']:.3f} | {ll:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
