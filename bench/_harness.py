"""Shared helpers for the ``bench/`` scripts: timers, a saved-for-backward byte counter, the
environment (device and versions) and the writer of ``BENCHMARKS.md`` sections.

The rule these helpers serve: there are no timed assertions in tests; speed is measured here and
every ratio is between two timings taken in the same run on the same device. Ratios use the
*minimum* over the repeats (the least disturbed run); medians are printed beside them so a
noisy machine shows.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"
DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}
_HEADER = """# Benchmarks

Measured by the scripts in `bench/` (see `bench/README.md`). Each script rewrites only its own
section, between its `<!-- bench:NAME -->` markers, when run with `--write`. Every ratio is
between timings taken in the same run on the same device (minimum over the repeats; the median
is shown beside it). Differences under ~3 % are noise.
"""


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Wall (CPU) or device (CUDA events) times of the repeats, in milliseconds."""

    times_ms: tuple[float, ...]

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def time_cpu(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 7) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: ``warmup`` untimed calls, then ``repeats``.

    The result of each call is released after the clock stops, so freeing the output is not
    timed (allocating it is, as it is for every case alike). The garbage collector is off while
    timing.
    """
    for _ in range(warmup):
        fn()
    times = []
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            stop = time.perf_counter()
            del out
            times.append((stop - start) * 1e3)
    finally:
        if gc_enabled:
            gc.enable()
    return Timing(tuple(times))


def _sleep_cycles_per_ms() -> float:
    """How many ``torch.cuda._sleep`` cycles make a millisecond on this GPU."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000)  # load the kernel
    start.record()
    torch.cuda._sleep(2_000_000)
    stop.record()
    torch.cuda.synchronize()
    return 2_000_000 / max(start.elapsed_time(stop), 1e-3)


def time_cuda(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    repeats: int = 30,
    flush_mib: int = 256,
    lead_ms: float = 2.0,
) -> Timing:
    """Time ``fn()`` on the current CUDA stream with ``torch.cuda.Event`` pairs.

    Before each timed call the GPU is given a fill of ``flush_mib`` MiB (evicts L2, as
    ``triton.testing.do_bench`` does) and a ``lead_ms`` spin (``torch.cuda._sleep``), so the
    Python dispatch of ``fn`` is queued ahead and the events measure device time only, the same
    way for every case. ``torch.cuda.synchronize`` closes warm-up and timing.
    """
    flush = torch.empty(flush_mib << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    cycles = int(_sleep_cycles_per_ms() * lead_ms) if hasattr(torch.cuda, "_sleep") else 0
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, stop in zip(starts, stops, strict=True):
        flush.zero_()
        if cycles:
            torch.cuda._sleep(cycles)
        start.record()
        out = fn()
        stop.record()
        del out
    torch.cuda.synchronize()
    return Timing(tuple(a.elapsed_time(b) for a, b in zip(starts, stops, strict=True)))


def timer(device: str, *, warmup: int, repeats: int) -> Callable[[Callable[[], object]], Timing]:
    """``time_cpu`` or ``time_cuda`` with the warm-up and repeat counts bound."""
    if device == "cuda":
        return lambda fn: time_cuda(fn, warmup=warmup, repeats=repeats)
    return lambda fn: time_cpu(fn, warmup=warmup, repeats=repeats)


# ---------------------------------------------------------------- memory


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes autograd keeps from ``fn()``'s forward for its backward.

    Every tensor packed through ``torch.autograd.graph.saved_tensors_hooks`` is counted once per
    storage (its whole storage: a saved view keeps its base alive), whatever its device. Only
    the forward runs; the graph is dropped afterwards.
    """
    storages: dict[tuple[str, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        storages[key] = max(storages.get(key, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


# ---------------------------------------------------------------- environment


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "unknown"))


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    text = f"{cpu_model()}, {usable} usable of {cores} logical cores; torch threads "
    text += str(torch.get_num_threads())
    if "numba" in sys.modules:
        text += f", numba threads {sys.modules['numba'].get_num_threads()}"
    return text


def gpu_description() -> str:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    text = (
        f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
        f"{props.multi_processor_count} SMs), CUDA {torch.version.cuda}"
    )
    try:
        driver = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        if driver:
            text += f", driver {driver[0]}"
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def environment(device: str) -> dict[str, str]:
    """Device and versions for the report (``device`` is ``"cpu"`` or ``"cuda"``)."""
    import dropkit

    info = {"device": gpu_description() if device == "cuda" else cpu_description()}
    if device == "cuda":
        info["host CPU"] = cpu_description()
    info["versions"] = ", ".join(
        [
            f"python {platform.python_version()}",
            f"torch {torch.__version__}",
            f"numpy {_version('numpy')}",
            f"numba {_version('numba')}",
            f"triton {_version('triton')}",
            f"dropkit {dropkit.__version__} (git {_git_revision()})",
        ]
    )
    info["OS"] = platform.platform()
    return info


def command_line() -> str:
    """The command that produced this run, relative to the repository root."""
    env = [
        f"{k}={os.environ[k]}"
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    ]
    python = Path(sys.executable)
    python = python.relative_to(REPO) if python.is_relative_to(REPO) else Path("python")
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    return shlex.join([*env, str(python), str(script), *sys.argv[1:]])


# ---------------------------------------------------------------- tables


@dataclass(frozen=True)
class Target:
    """A target on a row's ratio to its baseline (``on="ratio"``) or on dropkit's speed-up over
    that row (``on="speedup"`` = row time / dropkit time)."""

    on: str
    op: str  # "<=", ">=" or ">"
    value: float

    def met(self, measured: float) -> bool:
        if self.op == "<=":
            return measured <= self.value
        if self.op == ">=":
            return measured >= self.value
        return measured > self.value

    def text(self, baseline: str) -> str:
        sign = {"<=": "≤", ">=": "≥", ">": ">"}[self.op]
        if self.on == "ratio":
            return f"{sign} {self.value:g}× {baseline}"
        if self.op == ">" and self.value == 1:
            return "dropkit faster"
        return f"dropkit {sign} {self.value:g}× faster"


@dataclass(frozen=True)
class Row:
    """One timed case. ``ratio`` = its time / ``baseline``'s; ``speedup`` = its time /
    ``dropkit``'s (set for peers, i.e. how much faster dropkit is)."""

    group: str
    case: str
    dtype: str
    timing: Timing
    baseline: Timing | None = None
    baseline_name: str = ""
    dropkit: Timing | None = None
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.timing.min_ms / self.baseline.min_ms

    @property
    def speedup(self) -> float | None:
        return None if self.dropkit is None else self.timing.min_ms / self.dropkit.min_ms

    @property
    def result(self) -> str:
        if self.target is None:
            return ""
        measured = self.ratio if self.target.on == "ratio" else self.speedup
        return "—" if measured is None else ("PASS" if self.target.met(measured) else "MISS")


class RowGroup:
    """The rows of one group: a baseline first, then cases whose ratio is to that baseline.
    ``add(..., dropkit=True)`` marks dropkit's case; later ``peer=True`` cases get dropkit's
    speed-up over them."""

    def __init__(self, group: str, dtype: str, case: str, baseline: Timing, baseline_name: str):
        self.group, self.dtype = group, dtype
        self.baseline, self.baseline_name = baseline, baseline_name
        self.rows = [Row(group, case, dtype, baseline, baseline, baseline_name)]
        self._dropkit: Timing | None = None

    def add(
        self,
        case: str,
        timing: Timing,
        target: Target | None = None,
        *,
        dropkit: bool = False,
        peer: bool = False,
    ) -> None:
        if peer and self._dropkit is None:
            raise ValueError(f"{self.group}: add dropkit's case before the peer {case!r}")
        self.rows.append(
            Row(
                self.group,
                case,
                self.dtype,
                timing,
                self.baseline,
                self.baseline_name,
                self._dropkit if peer else None,
                target,
            )
        )
        if dropkit:
            self._dropkit = timing


@dataclass(frozen=True)
class SavedRow:
    """Bytes saved for backward by one forward. A dropkit row passes when at most
    ``limit_bytes`` are saved; a peer row reports whether it matches ``expected_per_elem``."""

    op: str
    case: str
    dtype: str
    nbytes: int | None
    numel: int
    limit_bytes: int | None = None
    expected_per_elem: float | None = None

    def cells(self) -> list[str]:
        if self.nbytes is None:
            return [self.op, self.case, self.dtype, "n/a", "n/a", "", "failed"]
        per = self.nbytes / self.numel
        if self.limit_bytes is not None:
            target = f"≤ {self.limit_bytes} B in all (0 B/elem)"
            result = "PASS" if self.nbytes <= self.limit_bytes else "MISS"
        elif self.expected_per_elem is not None:
            target = f"info: expected {self.expected_per_elem:g} B/elem"
            result = "as expected" if abs(per - self.expected_per_elem) < 0.01 else "differs"
        else:
            target, result = "", ""
        return [self.op, self.case, self.dtype, f"{self.nbytes:,}", f"{per:.3g}", target, result]


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}" if ms >= 10 else f"{ms:.3f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    right = {i for i, h in enumerate(header) if h.endswith(("ms", "×", "bytes", "B/elem"))}
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def timing_table(rows: Sequence[Row]) -> str:
    header = [
        "group",
        "case",
        "dtype",
        "min ms",
        "median ms",
        "ratio ×",
        "dropkit speed-up ×",
        "target",
        "result",
    ]
    body = []
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.3f} {r.baseline_name}"
        speedup = "" if r.speedup is None else f"{r.speedup:.2f}"
        target = "" if r.target is None else r.target.text(r.baseline_name)
        body.append(
            [
                r.group,
                r.case,
                r.dtype,
                fmt_ms(r.timing.min_ms),
                fmt_ms(r.timing.median_ms),
                ratio,
                speedup,
                target,
                r.result,
            ]
        )
    return markdown_table(header, body)


def saved_table(rows: Sequence[SavedRow]) -> str:
    header = ["op", "case", "dtype", "saved bytes", "B/elem", "target", "result"]
    return markdown_table(header, [r.cells() for r in rows])


def summary(rows: Sequence[Row], saved: Sequence[SavedRow]) -> str:
    results = [r.result for r in rows if r.result] + [
        s.cells()[-1] for s in saved if s.limit_bytes is not None
    ]
    return f"{results.count('PASS')} PASS, {results.count('MISS')} MISS of {len(results)} targets"


def bandwidth_note(rows: Sequence[Row], case: str, numel: int) -> str:
    """The copy baseline's effective bandwidth per dtype (read + write, from its minimum): a
    figure far below the machine's usual one means the whole run was disturbed, which the
    median/minimum spread alone does not show."""
    rates = [
        f"{r.dtype} {2 * numel * DTYPES[r.dtype].itemsize / r.timing.min_ms / 1e6:.1f} GB/s"
        for r in rows
        if r.case == case and r.dtype in DTYPES
    ]
    return f"{case} bandwidth (read + write, from its minimum): {', '.join(rates)}."


def noise_note(rows: Sequence[Row], spread: float = 1.25) -> str | None:
    """A warning naming the rows whose median exceeds ``spread`` times their minimum: on a
    shared or oversubscribed machine those ratios (and the PASS/MISS beside them) are suspect."""
    noisy = [r for r in rows if r.timing.median_ms > spread * r.timing.min_ms]
    if not noisy:
        return None
    names = "; ".join(f"{r.group} / {r.case} ({r.dtype})" for r in noisy)
    return (
        f"Noisy: median > {spread:g}× min for {len(noisy)} of {len(rows)} rows ({names}). "
        "Rerun on a quiet machine or with more --repeats before trusting these ratios."
    )


def render_section(
    title: str,
    env: dict[str, str],
    command: str,
    blocks: Sequence[str],
    notes: Sequence[str] = (),
) -> str:
    """A markdown section: title, date, device, versions, command, tables, notes."""
    lines = [f"## {title}", ""]
    lines.append(f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    lines += [f"- {key[0].upper() + key[1:]}: {value}" for key, value in env.items()]
    lines += [f"- Command (from the repository root): `{command}`", ""]
    for block in blocks:
        lines += [block, ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_section(key: str, body: str, path: Path = BENCHMARKS) -> None:
    """Write ``body`` between ``<!-- bench:key -->`` markers in ``path``, replacing that section
    if present, appending it otherwise; the file is created with a short header if missing."""
    if not re.fullmatch(r"[a-z0-9_]+", key):
        raise ValueError(f"section key must match [a-z0-9_]+, got {key!r}")
    start, stop = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = f"{start}\n{body.rstrip()}\n{stop}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(stop), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
