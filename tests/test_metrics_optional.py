"""Without the optional extras dropkit.metrics imports; what is missing says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dropkit.metrics._optional import MissingExtraError, require

INSTALL = 'pip install "dropkit[experiments]"'


def test_require_names_the_purpose_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.metrics", None)  # import now fails as if absent
    with pytest.raises(MissingExtraError) as caught:
        require("sklearn.metrics", "ROC/PR areas")
    message = str(caught.value)
    assert message == f"ROC/PR areas needs sklearn, which is not installed; {INSTALL}"
    assert isinstance(caught.value, ModuleNotFoundError)


def test_a_missing_dependency_of_an_installed_module_is_not_blamed_on_the_extra(
    tmp_path, monkeypatch
):
    (tmp_path / "dk_uses_absent.py").write_text("import dk_absent_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("dk_uses_absent", "the example")
    assert not isinstance(caught.value, MissingExtraError)
    assert caught.value.name == "dk_absent_module"


BLOCKED = """
import sys
for name in ("sklearn", "matplotlib", "tqdm", "mnist1d"):
    sys.modules[name] = None
"""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], capture_output=True,
                          text=True, check=False)  # fmt: skip


def test_metrics_work_without_the_extras_and_the_rest_asks_for_it():
    done = _python(
        "import dropkit.metrics as m\n"
        "print(m.expected_calibration_error([[0.9, 0.1], [0.2, 0.8]], [0, 1], n_bins=5))\n"
        "print(m.brier_score([[1.0, 0.0]], [0]))\n"
        "for call in (lambda: m.ood_auroc([0.1], [0.9]),\n"
        "             lambda: m.plot_reliability_diagram([[0.9, 0.1]], [0])):\n"
        "    try:\n"
        "        call()\n"
        "    except ModuleNotFoundError as error:\n"
        "        print(error)\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [float(v) for v in lines[:2]] == [pytest.approx(0.15), 0.0]
    assert lines[2] == f"ROC/PR areas needs sklearn, which is not installed; {INSTALL}"
    assert lines[3].startswith("plot_reliability_diagram needs matplotlib")
    assert lines[3].endswith(INSTALL)


def test_the_cli_without_the_extra_prints_one_line_with_the_install_command(tmp_path):
    done = _python(
        "from dropkit.cli import main\n"
        f"sys.exit(main(['run', 'toy-mlp', '--epochs', '1', '--out', {str(tmp_path / 'r')!r}]))\n"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dropkit: error: dropkit run needs matplotlib, which is not installed; {INSTALL}"
    ]
    assert not (tmp_path / "r").exists()
