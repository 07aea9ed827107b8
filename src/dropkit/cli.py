"""The ``dropkit`` command line (also ``python -m dropkit``).

Commands: ``demo`` (the digits MLP with p in {0, 0.2, 0.5}), ``list`` (the recipes), ``show``
(one recipe's settings and defaults), ``run`` (a recipe for each rate), ``sweep`` (rates ×
seeds, mean ± std), ``report`` (rebuild a run's report from its files) and ``bench`` (the
benchmark scripts of a source checkout).

Every error is one line on stderr, ``dropkit: error: ...``, naming the flag or the file: exit
status 2 for a usage error (a bad flag or value), 1 for a runtime error (missing or corrupt
data, an output path that is a file), 130 after Ctrl-C (with the command that resumes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .metrics._optional import require

#: Exit statuses: a runtime failure, a usage error (as argparse), an interrupted command.
FAILED = 1
USAGE = 2
INTERRUPTED = 130

#: The error contract, printed at the end of ``dropkit --help``.
EPILOG = (
    "errors: one line on stderr, 'dropkit: error: ...', naming the flag or file; exit status 2 "
    "for a usage error (bad flag or value), 1 for a runtime error (missing or corrupt data, "
    "an output path that is a file), 130 when interrupted (the message gives the command that "
    "resumes). Progress bars are drawn only when stderr is a terminal."
)


class CommandError(Exception):
    """A runtime failure to report as one line, without a traceback (exit status 1)."""


class UsageError(CommandError):
    """A bad flag or flag value, reported as one line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dropkit: error: ...`` and exit status 2, no usage."""

    def error(self, message: str):  # type: ignore[override]
        # argparse names the flag ("argument --p: ..."); the command helps after a subcommand
        command = self.prog.removeprefix("dropkit").strip()
        raise UsageError(f"{command}: {message}" if command else message)


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


def _seed(text: str) -> int:
    from .experiments.recipe import MAX_SEED

    value = _int_at_least(0, "seed")(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"seed must be an integer in [0, {MAX_SEED}], got {text!r}"
        )
    return value


def _no_repeats(flag: str, what: str, values: Sequence[float] | None) -> None:
    """A repeated rate or seed would count one trial twice (a fake ± and n)."""
    seen: set[float] = set()
    for value in values or ():
        if value in seen:
            raise UsageError(f"{flag}: {what} {value!r} is given twice; each value is one trial")
        seen.add(value)


def _print_results(run_dir: Path) -> None:
    from .experiments.report import load_run, summary_table

    headers, rows = summary_table(load_run(run_dir))
    print(format_table(headers, rows))
    written = [n for n in ("report.md", "report.html", "curves.png", "reliability.png",
                           "rates.png") if (run_dir / n).is_file()]  # fmt: skip
    print(f"\nrun folder: {run_dir}\nwrote: {', '.join(written)}")


def _check_paths(args: argparse.Namespace) -> None:
    """--out must be (or become) a folder and --data must be one: each error names the flag."""
    if args.out is not None:
        out = Path(args.out)
        for path in (out, *out.parents):
            if path.exists() and not path.is_dir():
                raise CommandError(f"--out {args.out}: {path} is a file, not a folder")
    if args.data is not None and not Path(args.data).is_dir():
        raise CommandError(f"--data {args.data}: no such folder")


def _get_recipe(name: str):
    from .experiments.recipe import get_recipe

    try:
        return get_recipe(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_resume(args: argparse.Namespace, recipe) -> None:
    """With --resume, flags may repeat the saved run's values (as in the printed resume
    command) but may not change them."""
    from .experiments.recipe import apply_overrides
    from .experiments.runs import read_json

    if args.out is None:
        raise UsageError("--resume needs --out RUN_DIR (the run folder to continue)")
    config_file = Path(args.out) / "config.json"
    if not config_file.is_file():
        raise CommandError(f"--out {args.out}: nothing to resume (no config.json)")
    saved = read_json(config_file)
    settings = recipe.settings(**saved.get("settings", {}))
    checks = [("--p", args.p, lambda v: [float(p) for p in v] == saved.get("rates")),
              ("--epochs", args.epochs, lambda v: v == saved.get("epochs")),
              ("--seed" if args.command == "run" else "--seeds", args.seeds_given and args.seeds,
               lambda v: list(v) == saved.get("seeds")),
              ("--variants", args.variants, lambda v: list(v) == saved.get("variants")),
              ("--set", args.set, lambda v: apply_overrides(settings, v) == settings)]  # fmt: skip
    for flag, value, same in checks:
        if value and not same(value):
            raise UsageError(
                f"{flag}: --resume continues the run in {args.out} with its saved settings, "
                f"which differ; drop {flag}"
            )


def _resume_command(args: argparse.Namespace) -> str:
    """The command that continues an interrupted run: only what is not saved in the run."""
    words = ["dropkit", args.command, args.recipe, "--out", str(args.out), "--resume"]
    if args.device != "cpu":
        words += ["--device", args.device]
    if args.data is not None:
        words += ["--data", args.data]
    if args.no_progress:
        words.append("--no-progress")
    return " ".join(shlex.quote(w) for w in words)


def _run(args: argparse.Namespace, name: str, seeds: Sequence[int], command: str) -> int:
    from .experiments.runner import run_recipe

    recipe = _get_recipe(name)
    _no_repeats("--p", "rate", args.p)
    _no_repeats("--seeds", "seed", seeds)
    if args.variants is not None and not recipe.variants:
        from .experiments.recipe import RECIPES

        having = sorted(r.name for r in RECIPES.values() if r.variants)
        raise UsageError(f"--variants: recipe {name} has no variants (recipes with variants: "
                         f"{', '.join(having) or 'none'})")  # fmt: skip
    _check_paths(args)
    if args.resume:
        _check_resume(args, recipe)
    require("matplotlib", f"dropkit {args.command}")  # the report's plots, before any training
    world = _join_processes(args, name)  # under torchrun: DDP; rank 0 alone writes the run
    main_rank = world is None or world.rank == 0
    progress = main_rank and not args.no_progress and sys.stderr.isatty()
    if progress:
        require("tqdm", "progress bars (or pass --no-progress)")
    if main_rank:
        print(f"dropkit {__version__}: {recipe.name} - {recipe.summary}", flush=True)
    from .experiments import distributed

    out = Path(args.out) if args.out is not None else None
    with distributed.run_folder(out, args.resume) as folder:
        try:
            run_dir = run_recipe(
                name, out=folder, rates=args.p, seeds=seeds, epochs=args.epochs,
                device=args.device, overrides=args.set or (), variants=args.variants,
                resume=args.resume, progress=progress, data_path=args.data, command=command,
                report=main_rank,
            )  # fmt: skip
            distributed.shutdown()
        except RuntimeError as error:  # a collective failed: another process stopped
            if world is None or not distributed.is_collective_failure(error):
                raise
            raise CommandError(
                f"rank {world.rank} of {world.size}: the process group failed, most likely "
                f"because another process of the run stopped (its error is above): "
                f"{_one_line(error)[:200]}"
            ) from None
    if main_rank:
        print()
        _print_results(run_dir)
    return 0


def _join_processes(args: argparse.Namespace, name: str):
    """Under ``torchrun`` (RANK and WORLD_SIZE set): join the process group, agree on the run
    folder, and turn torchrun's stop signal into a one-line error on this rank."""
    from .experiments import distributed

    world = distributed.from_environment(args.device)
    if world is None:
        return None
    if args.out is None:
        from .experiments.runner import default_out

        args.out = distributed.agree(str(default_out(name)))

    def stop(signum: int, frame: object) -> None:
        raise CommandError(
            f"rank {world.rank} of {world.size}: stopped because another process of the run "
            "failed or was stopped (its error is above); the run folder holds whole files only"
        )

    signal.signal(signal.SIGTERM, stop)
    return world


def _command_line(argv: Sequence[str]) -> str:
    return "dropkit " + " ".join(shlex.quote(a) for a in argv)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the digits MLP with p = 0, 0.2, 0.5 and print the comparison."""
    args.p, args.set, args.variants, args.seeds_given, args.resume = (
        [0.0, 0.2, 0.5], [], None, False, False,
    )  # fmt: skip
    _check_paths(args)
    if args.out is None:
        from .experiments.runner import default_out

        args.out = str(default_out("demo"))
    return _run(args, "digits-mlp", [args.seed], args.command_line)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the recipes and what each reproduces."""
    from .experiments.recipe import RECIPES

    _get_recipe("digits-mlp")  # registers the built-in recipes
    recipes = sorted(RECIPES.values(), key=lambda r: r.name)
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.summary}")
    print("\ndropkit show RECIPE prints a recipe's source, settings and defaults; "
          "dropkit run RECIPE [--p P ...] [--epochs N] [--seed S] [--out DIR] runs "
          "it.")  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one recipe: what it reproduces, its defaults and every --set setting."""
    import dataclasses
    import typing

    from .experiments.runs import rate_text

    recipe = _get_recipe(args.recipe)
    settings = recipe.settings()
    hints = typing.get_type_hints(recipe.settings)
    print(f"{recipe.name}: {recipe.summary}")
    rows = [("source", recipe.source), ("data", recipe.data), ("task", recipe.task),
            ("rates (--p)", " ".join(rate_text(p) for p in recipe.default_rates)),
            ("epochs (--epochs)", str(recipe.default_epochs)),
            ("variants (--variants)", " ".join(recipe.variants) if recipe.variants
             else "none: --variants does not apply")]  # fmt: skip
    for label, value in rows:
        print(f"  {label + ':':<22} {value}")
    print("settings (--set KEY=VALUE; tuples as comma lists):")
    fields = dataclasses.fields(settings)
    width = max(len(f.name) for f in fields)
    for f in fields:
        kind = getattr(hints[f.name], "__name__", None) or str(hints[f.name])
        print(f"  {f.name:<{width}}  {getattr(settings, f.name)!r}  ({kind})")
    if recipe.notes:
        print(f"notes: {recipe.notes}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run a recipe for each rate."""
    args.seeds_given = args.seed is not None
    args.seeds = None if args.seed is None else [args.seed]
    return _run(args, args.recipe, [args.seed or 0], args.command_line)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a recipe over rates × seeds and print mean ± std."""
    args.seeds_given = args.seeds is not None
    return _run(args, args.recipe, args.seeds or [0, 1, 2], args.command_line)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild a run's report and plots from its files."""
    from .experiments.report import write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CommandError(f"report {args.run_dir}: no such folder")
    if not (run_dir / "config.json").is_file():
        raise CommandError(f"report {args.run_dir}: not a dropkit run folder (no config.json)")
    require("matplotlib", "dropkit report")
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
                            help="seeds, each a trial (default 0 1 2)")  # fmt: skip
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
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (off unless stderr is a terminal)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dropkit", description="dropkit: every dropout variant, done correctly.",
        epilog=EPILOG,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"dropkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="digits MLP with p = 0, 0.2, 0.5: table, plots, report")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    _add_common(demo)
    demo.set_defaults(func=cmd_demo)
    listing = sub.add_parser("list", help="list the recipes")
    listing.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="a recipe's source, defaults and settings")
    show.add_argument("recipe", help="recipe name (see dropkit list)")
    show.set_defaults(func=cmd_show)
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
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"  # not "[Errno 20] Not a directory: 'x'"
    else:
        text = str(error)
    return " ".join(text.split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dropkit`` console script; the exit status (see :data:`EPILOG`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"dropkit: error: {_one_line(error)}", file=sys.stderr)
        return USAGE
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
        resumable = getattr(args, "out", None) and args.command in ("run", "sweep")
        hint = f"; continue with: {_resume_command(args)}" if resumable else ""
        print(f"\ndropkit: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED
    except UsageError as error:
        print(f"dropkit: error: {_one_line(error)}", file=sys.stderr)
        return USAGE
    # OSError covers missing files, failed downloads and unwritable folders; zlib.error a
    # damaged compressed file
    except (CommandError, ValueError, OSError, ImportError, FloatingPointError,
            zlib.error) as error:  # fmt: skip
        print(f"dropkit: error: {_one_line(error)}", file=sys.stderr)
        return FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
