"""The ``dropkit`` command line (also ``python -m dropkit``).

Commands: ``demo`` (the digits MLP with p in {0, 0.2, 0.5}), ``list`` (the recipes), ``run``
(a recipe for each rate), ``sweep`` (rates × seeds, mean ± std), ``report`` (rebuild a run's
report from its files) and ``bench`` (the benchmark scripts of a source checkout). Errors in
the arguments or the data end the command with a one-line message and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__

#: Exit status for a failed command (argparse uses 2 for bad arguments).
FAILED = 1
INTERRUPTED = 130


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned plain-text table; floats printed with 3 decimals."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dropout rate must be a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"dropout rate must be in [0, 1), got {value}")
    return value


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``; the message says what the value is."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"{what} must be an integer >= {minimum}, got {text!r}"
            )
        return value

    return parse


_positive_int = _int_at_least(1, "epochs")
_seed = _int_at_least(0, "seed")


def _print_results(run_dir: Path) -> None:
    from .experiments.report import load_run, summary_table

    headers, rows = summary_table(load_run(run_dir))
    print(format_table(headers, rows))
    written = [n for n in ("report.md", "report.html", "curves.png", "reliability.png",
                           "rates.png") if (run_dir / n).is_file()]  # fmt: skip
    print(f"\nrun folder: {run_dir}\nwrote: {', '.join(written)}")


def _run(args: argparse.Namespace, name: str, seeds: Sequence[int], command: str) -> int:
    from .experiments.recipe import get_recipe
    from .experiments.runner import run_recipe

    recipe = get_recipe(name)
    if args.resume:
        given = [flag for flag, value in (("--p", args.p), ("--epochs", args.epochs),
                                          ("--set", args.set), ("--variants", args.variants),
                                          ("--seed(s)", args.seeds_given)) if value]  # fmt: skip
        if given:
            raise CommandError(
                f"--resume continues the saved run with its saved settings; drop {', '.join(given)}"
            )
        if args.out is None:
            raise CommandError("--resume needs --out RUN_DIR (the run folder to continue)")
    print(f"dropkit {__version__}: {recipe.name} - {recipe.summary}", flush=True)
    run_dir = run_recipe(
        name, out=args.out, rates=args.p, seeds=seeds, epochs=args.epochs, device=args.device,
        overrides=args.set or (), variants=args.variants, resume=args.resume,
        progress=not args.no_progress, data_path=args.data, command=command,
    )  # fmt: skip
    print()
    _print_results(run_dir)
    return 0


def _command_line(argv: Sequence[str]) -> str:
    return "dropkit " + " ".join(shlex.quote(a) for a in argv)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the digits MLP with p = 0, 0.2, 0.5 and print the comparison."""
    args.p, args.set, args.variants, args.seeds_given, args.resume = (
        [0.0, 0.2, 0.5], [], None, False, False,
    )  # fmt: skip
    if args.out is None:
        from .experiments.runner import default_out

        args.out = str(default_out("demo"))
    return _run(args, "digits-mlp", [args.seed], args.command_line)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the recipes and what each reproduces."""
    from .experiments.recipe import RECIPES, get_recipe

    get_recipe("digits-mlp")  # registers the built-in recipes
    recipes = sorted(RECIPES.values(), key=lambda r: r.name)
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.summary}")
    print("\ndropkit run RECIPE [--p P ...] [--epochs N] [--seed S] [--out DIR] runs one; "
          "the defaults of each are in its report's config.")  # fmt: skip
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a recipe for each rate."""
    args.seeds_given = args.seed is not None
    return _run(args, args.recipe, [args.seed or 0], args.command_line)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a recipe over rates × seeds and print mean ± std."""
    args.seeds_given = args.seeds is not None
    return _run(args, args.recipe, args.seeds or [0, 1, 2], args.command_line)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild a run's report and plots from its files."""
    from .experiments.report import write_report

    run_dir = Path(args.run_dir)
    write_report(run_dir)
    _print_results(run_dir)
    return 0


def bench_dir() -> Path:
    """The ``bench/`` folder of the source checkout this package runs from."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "bench", Path.cwd() / "bench"):
        if (candidate / "_harness.py").is_file():
            return candidate
    raise CommandError(
        "the benchmark scripts ship with the source tree (bench/), not the installed package; "
        "run dropkit bench from a checkout of dropkit"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """List or run benchmark scripts (extra arguments go to every script)."""
    folder = bench_dir()
    scripts = {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")}
    if args.list or not args.names:
        for name, path in scripts.items():
            parts = path.read_text().split('"""')
            print(f"{name:18s} {parts[1].strip().splitlines()[0] if len(parts) > 1 else ''}")
        return 0
    unknown = [n for n in args.names if n not in scripts]
    if unknown:
        raise CommandError(f"unknown benchmark(s) {unknown}; choose from: {', '.join(scripts)}")
    for name in args.names:
        print(f"$ {Path(sys.executable).name} bench/{name}.py {' '.join(args.args)}", flush=True)
        done = subprocess.run([sys.executable, str(scripts[name]), *args.args], check=False)
        if done.returncode != 0:
            raise CommandError(f"bench/{name}.py exited with status {done.returncode}")
    return 0


def _add_run_options(parser: argparse.ArgumentParser, sweep: bool) -> None:
    parser.add_argument("recipe", help="recipe name (see dropkit list)")
    parser.add_argument("--p", type=_rate, nargs="+", metavar="P",
                        help="dropout rates in [0, 1) (default: the recipe's)")  # fmt: skip
    if sweep:
        parser.add_argument("--seeds", type=_seed, nargs="+", metavar="S",
                            help="seeds (default 0 1 2)")  # fmt: skip
    else:
        parser.add_argument("--seed", type=_seed, help="random seed (default 0)")
    _add_common(parser)
    parser.add_argument(
        "--variants", nargs="+", metavar="V", help="variants for p > 0 (e.g. standard locked)"
    )
    parser.add_argument(
        "--set", nargs="+", metavar="KEY=VALUE", help="recipe settings, e.g. --set batch_size=64"
    )
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint")  # fmt: skip


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=_positive_int, help="epochs (default: the recipe's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", metavar="DIR", help="run folder (default runs/NAME-TIME)")
    parser.add_argument(
        "--data", metavar="PATH", help="data root (default $DROPKIT_DATA, else the cache)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropkit", description="dropkit: every dropout variant, done correctly."
    )
    parser.add_argument("--version", action="version", version=f"dropkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="digits MLP with p = 0, 0.2, 0.5: table, plots, report")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    _add_common(demo)
    demo.set_defaults(func=cmd_demo)
    listing = sub.add_parser("list", help="list the recipes")
    listing.set_defaults(func=cmd_list)
    run = sub.add_parser("run", help="run a recipe for each dropout rate")
    _add_run_options(run, sweep=False)
    run.set_defaults(func=cmd_run)
    sweep = sub.add_parser("sweep", help="run a recipe over rates x seeds (mean ± std)")
    _add_run_options(sweep, sweep=True)
    sweep.set_defaults(func=cmd_sweep)
    report = sub.add_parser("report", help="rebuild a run's report and plots from its files")
    report.add_argument("run_dir", help="the run folder")
    report.set_defaults(func=cmd_report)
    bench = sub.add_parser("bench", help="run benchmark scripts (from a source checkout)")
    bench.add_argument("names", nargs="*", help="scripts to run (none: list them)")
    bench.add_argument("--list", action="store_true", help="list the scripts")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments after -- go to scripts")
    bench.set_defaults(func=cmd_bench)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropkit`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.command_line = _command_line(argv)
    if getattr(args, "args", None) and args.args[0] == "--":
        args.args = args.args[1:]
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader went away (``dropkit list | head``): nothing left to say to it
        # point fd 1 at devnull so the flush at exit does not fail on the broken pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        hint = (f"; continue with: {args.command_line} --resume" if out and
                args.command in ("run", "sweep") and "--resume" not in argv else "")  # fmt: skip
        print(f"\ndropkit: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED
    # OSError covers missing files, failed downloads and unwritable folders
    except (CommandError, ValueError, OSError, ImportError, FloatingPointError) as error:
        print(f"dropkit: error: {_one_line(error)}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
