"""The built wheel: package code, licence and type marker only; ``dropkit demo`` runs from it."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of what an sdist holds, so no stale build folder can add files.
    tree = tmp_path_factory.mktemp("tree")
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "src", tree / "src", ignore=junk)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    # --no-build-isolation: the build backend (setuptools) is already installed; no index needed.
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*cmd, "-w", str(out), str(tree)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip()[-300:]}")
    (path,) = out.glob("dropkit-*.whl")
    return path


def test_wheel_holds_the_package_licence_and_type_marker_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"dropkit", next(t for t in top if t.endswith(".dist-info"))}
    assert "dropkit/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    stray = [n for n in names if Path(n).name.startswith(("test_", "conftest"))]
    assert stray == [], "tests in the wheel"
    data = [n for n in names if n.endswith((".npz", ".csv", ".gz", ".png", ".pt", ".idx"))]
    assert data == [], "data files in the wheel"


def test_metadata_licence_and_core_dependencies(wheel):
    archive = zipfile.ZipFile(wheel)
    meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(archive.read(meta_name))
    assert meta["License-Expression"] == "Apache-2.0"
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in core) == [
        "numba",
        "numpy",
        "torch",
    ]
    assert {"experiments", "hf", "keras", "docs", "dev"} <= set(meta.get_all("Provides-Extra"))


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    subprocess.run([*cmd, str(wheel)], check=True, capture_output=True)
    # The wheel's copy comes first on the path; run outside the repository so that neither the
    # source tree nor the editable install can stand in for it.
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import dropkit, sys; from dropkit.cli import main\n"
        f"assert dropkit.__file__.startswith({str(target)!r}), dropkit.__file__\n"
        "sys.exit(main(['demo', '--epochs', '1', '--out', 'demo', '--no-progress']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "run folder: demo" in done.stdout
    assert (tmp_path / "demo" / "report.md").is_file()
