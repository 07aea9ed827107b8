"""Read-only installs: with the package folder, $HOME and NUMBA_CACHE_DIR not writable, the
kernels import, compile and give the reference mask, run as an unprivileged user; the cache
falls back to a private temp folder (or to no cache at all when no temp folder is usable)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dropkit.rng import cpu

SRC = Path(cpu.__file__).resolve().parents[1]
NOBODY = 65534
SCRIPT = """
import numpy as np
from dropkit.rng import cpu, jitcache, philox
assert cpu.__file__.startswith({root!r}), cpu.__file__
out = np.empty(1000, np.float32)
x = np.ones(1000, np.float32)
cpu.masked_scale_kernel(x, out, 42, 3, 0, philox.keep_threshold(0.5), 2.0)
keep = philox.random_words(42, 3, 1000) >= philox.keep_threshold(0.5)
assert np.array_equal(out, np.where(keep, 2.0, 0.0).astype(np.float32))
print("cache:", jitcache.private_cache_dir())
"""

pytestmark = [
    pytest.mark.skipif(not cpu.AVAILABLE, reason="needs numba"),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
        reason="needs root and setpriv to run a child as an unprivileged user",
    ),
]


def _readonly_copy() -> str:
    root = tempfile.mkdtemp(prefix="dropkit-ro-")
    shutil.copytree(SRC, Path(root, "dropkit"), ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
    os.chmod(root, 0o555)
    return root


@pytest.fixture(scope="module")
def nobody_can_run_python() -> None:
    """Skip where the unprivileged user cannot import this interpreter's packages (a virtual
    environment inside a folder only its owner may enter): then nothing about dropkit can be
    tested as that user."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    cmd += [sys.executable, "-c", "import numpy, numba"]
    done = subprocess.run(cmd, env={"PATH": os.environ.get("PATH", "")}, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"user {NOBODY} cannot import numpy/numba from {sys.prefix} (not readable)")


@pytest.mark.parametrize("temp_usable", [True, False])
def test_readonly_install_imports_and_runs(temp_usable, nobody_can_run_python):
    root = _readonly_copy()
    tmp = tempfile.mkdtemp(prefix="dropkit-tmp-")
    try:
        if temp_usable:
            os.chown(tmp, NOBODY, NOBODY)
        else:
            os.chmod(tmp, stat.S_IRUSR | stat.S_IXUSR | stat.S_IROTH | stat.S_IXOTH)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": root,
            "HOME": "/nonexistent",
            "NUMBA_CACHE_DIR": root,  # set, but not writable
            "TMPDIR": tmp,
        }
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        cmd += [sys.executable, "-c", SCRIPT.format(root=root)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        if temp_usable:
            assert f"cache: {tmp}/dropkit-numba-{NOBODY}" in done.stdout
            assert any(Path(tmp, f"dropkit-numba-{NOBODY}").rglob("*.nbi"))
        else:  # tempfile skips the unusable TMPDIR: another temp folder or no cache
            assert tmp not in done.stdout
    finally:
        for path in (root, tmp):
            for dirpath, _, _ in os.walk(path):
                os.chmod(dirpath, 0o755)
            shutil.rmtree(path, ignore_errors=True)
