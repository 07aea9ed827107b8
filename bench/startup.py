"""Start-up cost: ``import torch`` vs ``import dropkit`` vs the first dropout call, fresh processes.

Each measurement is a new interpreter (min of interleaved repeats). Targets: ``import dropkit``
≤ torch's import + 0.3 s; ``import dropkit.reference`` loads neither torch nor numba; the first
dropout call ≤ 0.3 s once numba's kernel cache is warm. Usage:
``.venv/bin/python bench/startup.py [--repeats R]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

SNIPPETS = {
    "import torch": (
        "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    ),
    "import dropkit": (
        "import time; t = time.perf_counter(); import torch, dropkit, dropkit.nn; "
        "print(time.perf_counter() - t)"
    ),
    "first dropout call": (
        "import torch, dropkit.functional as F, time; x = torch.ones(1024); "
        "t = time.perf_counter(); F.dropout(x, 0.5); print(time.perf_counter() - t)"
    ),
    "reference loads torch/numba": (
        "import sys, dropkit.reference; "
        "print(int(any(m in sys.modules for m in ('torch', 'numba'))))"
    ),
}


def run(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    run(SNIPPETS["first dropout call"])  # warm numba's on-disk cache
    best = {name: float("inf") for name in SNIPPETS}
    for _ in range(args.repeats):
        for name, code in SNIPPETS.items():
            best[name] = min(best[name], run(code))
    extra = best["import dropkit"] - best["import torch"]
    print(f"import torch            {best['import torch']:.3f} s")
    print(
        f"import dropkit (+nn)    {best['import dropkit']:.3f} s  (+{extra:.3f} s; target <= 0.3)"
    )
    print(f"first dropout call      {best['first dropout call']:.3f} s  (target <= 0.3)")
    print(f"reference loads torch/numba: {'yes' if best['reference loads torch/numba'] else 'no'}")


if __name__ == "__main__":
    main()
