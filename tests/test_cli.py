"""The command line: ``dropkit demo`` prints the tables, bad arguments fail cleanly."""

import subprocess
import sys

import pytest

import dropkit
from dropkit.cli import format_table, main


def test_version_is_exposed():
    assert isinstance(dropkit.__version__, str)
    assert dropkit.__version__.count(".") >= 2


def test_demo_prints_summary_table(capsys):
    assert main(["demo", "--epochs", "50", "--p", "0.5", "0"]) == 0
    out = capsys.readouterr().out
    assert "eval acc (dropout off)" in out
    summary = out.strip().splitlines()[-2:]
    assert [line.split()[0] for line in summary] == ["0.5", "0"]


def test_demo_rejects_rate_outside_unit_interval(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--p", "1.5"])
    assert info.value.code == 2
    assert "[0, 1]" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "dropkit", "demo", "--epochs", "5", "--p", "0.2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "train-mode acc" in done.stdout


def test_format_table_aligns_columns():
    text = format_table(["a", "bb"], [(1, 0.5), (10, 0.25)])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1", "0.500"]
