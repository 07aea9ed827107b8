"""The ``dropkit`` command line (also ``python -m dropkit``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned plain-text table; floats printed with 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"dropout rate must be in [0, 1], got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the seed experiment (NumPy MLP, manual backprop) for each rate and print tables."""
    from .experiments import ToyMLPConfig, run_toy_mlp

    base = ToyMLPConfig(epochs=args.epochs, seed=args.seed)
    print(
        f"dropkit {__version__} demo: NumPy MLP {base.n_features}-{base.n_hidden}-"
        f"{base.n_classes} with dropout, trained by manual backprop on {base.n_samples} "
        f"Gaussian samples with random labels (full-batch SGD, lr {base.lr}, "
        f"{base.epochs} epochs, seed {base.seed})\n"
    )
    results = []
    for p in args.p:
        config = ToyMLPConfig(**{**base.__dict__, "p": p})
        result = run_toy_mlp(config)
        results.append(result)
        rows = [(f"{p:g}", r.epoch, r.loss, r.train_accuracy) for r in result.history]
        print(format_table(["p", "epoch", "loss", "train acc (dropout on)"], rows), end="\n\n")
    summary = [
        (
            f"{r.config.p:g}",
            r.history[-1].loss,
            r.train_mode_accuracy,
            r.eval_accuracy,
            r.eval_accuracy - r.train_mode_accuracy,
        )
        for r in results
    ]
    headers = ["p", "final loss", "train-mode acc", "eval acc (dropout off)", "gap"]
    print(format_table(headers, summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropkit", description="dropkit: every dropout variant, done correctly."
    )
    parser.add_argument("--version", action="version", version=f"dropkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the seed dropout experiment and print a table")
    demo.add_argument(
        "--p", type=_rate, nargs="+", default=[0.5, 0.0], help="dropout rates (default 0.5 0)"
    )
    demo.add_argument("--epochs", type=_positive_int, default=200, help="epochs (default 200)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropkit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
