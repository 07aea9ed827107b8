"""The command line end to end: demo, list, run, sweep, report, bench, and clean failures."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import dropkit
from dropkit.cli import format_table, main

TINY = ["--set", "n_train=120", "mc_samples=3", "hidden=32", "--no-progress"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user cache, no data folder, downloads allowed only where a test says otherwise."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.delenv("DROPKIT_OFFLINE", raising=False)


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
         ) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "dropkit", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd,
                          check=False)  # fmt: skip


def test_version_is_exposed():
    assert isinstance(dropkit.__version__, str)
    assert dropkit.__version__.count(".") >= 2


def test_list_names_every_recipe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("toy-mlp", "mnist-mlp", "digits-mlp", "cnn-spatial", "rnn-locked",
                 "transformer-lm", "uci-mc", "srivastava-mnist", "mnist1d-mlp"):  # fmt: skip
        assert f"\n{name} " in f"\n{out}", name


def test_demo_writes_a_run_folder_and_prints_the_comparison(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.strip().startswith("trial"))
    for column in ("train acc", "test acc", "gap", "test NLL", "MC ECE"):
        assert column in header
    rows = [line.split()[0] for line in out.splitlines() if line.strip().startswith("p=")]
    assert rows == ["p=0", "p=0.2", "p=0.5"]
    assert f"run folder: {out_dir}" in out
    for name in ("report.md", "report.html", "curves.png", "reliability.png", "rates.png"):
        assert (out_dir / name).is_file()


def test_run_then_report_regenerates_from_saved_metrics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "digits-mlp", "--p", "0", "0.5", "--epochs", "2", "--seed", "3",
                 "--out", str(run_dir), *TINY]) == 0  # fmt: skip
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seeds"] == [3]
    assert config["rates"] == [0.0, 0.5]
    assert config["command"].startswith("dropkit run digits-mlp --p 0 0.5")
    report = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    (run_dir / "curves.png").unlink()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == report
    assert (run_dir / "curves.png").is_file()
    assert "p=0.5" in capsys.readouterr().out


def test_sweep_runs_every_seed_and_reports_mean_and_std(tmp_path, capsys):
    run_dir = tmp_path / "sweep"
    assert main(["sweep", "toy-mlp", "--p", "0.5", "--seeds", "0", "1", "--epochs", "3",
                 "--out", str(run_dir), "--no-progress"]) == 0  # fmt: skip
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == [
        "p0.5-seed0", "p0.5-seed1",
    ]  # fmt: skip
    row = next(line for line in capsys.readouterr().out.splitlines() if "p=0.5" in line)
    assert "±" in row
    assert row.split()[-1] == "2"  # two finished seeds


def test_interrupted_run_resumes_from_the_command_line(tmp_path):
    """A run killed mid-way (SIGINT) continues with --resume to the same records."""
    from dropkit.experiments import run_recipe

    args = dict(rates=[0.5], epochs=3, progress=False, report=False)
    whole = run_recipe("toy-mlp", out=tmp_path / "whole", **args)

    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe("toy-mlp", out=tmp_path / "cut", on_epoch=stop, **args)
    done = _cli("run", "toy-mlp", "--resume", "--out", str(tmp_path / "cut"), "--no-progress")
    assert done.returncode == 0, done.stderr
    for run in (whole, tmp_path / "cut"):
        records = (run / "p0.5-seed0" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["epoch"] for r in records] == [1, 2, 3]
    strip = [
        [{k: v for k, v in json.loads(r).items() if k != "time_s"} for r in
         (run / "p0.5-seed0" / "metrics.jsonl").read_text().splitlines()]
        for run in (whole, tmp_path / "cut")
    ]  # fmt: skip
    assert strip[0] == strip[1]


def test_keyboard_interrupt_exits_130_with_a_resume_hint(tmp_path, monkeypatch, capsys):
    import dropkit.experiments.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_recipe", interrupted)
    assert main(["run", "toy-mlp", "--out", str(tmp_path / "r"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err
    assert "--resume" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "nope"], 2, "unknown recipe 'nope'"),
        (["run", "toy-mlp", "--p", "1.5"], 2, "argument --p: dropout rate must be in [0, 1)"),
        (["run", "toy-mlp", "--p", "half"], 2, "argument --p: dropout rate must be a number"),
        (["run", "toy-mlp", "--epochs", "0"], 2, "--epochs: epochs must be an integer >= 1"),
        (["run", "toy-mlp", "--seed", "-1"], 2, "--seed: seed must be an integer >= 0"),
        (["run", "toy-mlp", "--seed", str(2**64)], 2, "--seed: seed must be an integer in [0, "),
        (["run", "toy-mlp", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["run"], 2, "run: the following arguments are required: recipe"),
        (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
        (["sweep", "toy-mlp", "--seeds", "0", "0"], 2, "--seeds: seed 0 is given twice"),
        (["sweep", "toy-mlp", "--p", "0.5", "0.50"], 2, "--p: rate 0.5 is given twice"),
        (["run", "digits-mlp", "--variants", "locked"], 2,
         "--variants: recipe digits-mlp has no variants (recipes with variants: rnn-locked"),
        (["run", "toy-mlp", "--set", "bogus=1"], 1, "unknown setting"),
        (["run", "toy-mlp", "--resume"], 2, "--resume needs --out"),
        (["run", "toy-mlp", "--resume", "--out", "x"], 1, "--out x: nothing to resume"),
        (["run", "toy-mlp", "--data", "no-such-dir"], 1, "--data no-such-dir: no such folder"),
        (["report", "no-such-run"], 1, "report no-such-run: no such folder"),
        (["report", "."], 1, "report .: not a dropkit run folder (no config.json)"),
        (["bench", "no-such-bench"], 1, "unknown benchmark"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_with_one_line_and_no_traceback(tmp_path, args, code, message):
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == code
    assert done.stderr.startswith("dropkit: error: "), done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # exactly one line, no usage block


def test_out_that_is_a_file_is_named_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    for out in ("afile", "afile/run"):
        done = _cli("run", "toy-mlp", "--out", out, "--no-progress", cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr == f"dropkit: error: --out {out}: afile is a file, not a folder\n"


def test_help_documents_the_error_contract():
    done = _cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "exit status 2 for a usage error" in text
    assert "1 for a runtime error" in text


def test_show_prints_the_defaults_and_every_setting(capsys):
    from dropkit.experiments import get_recipe

    assert main(["show", "mnist-mlp"]) == 0
    out = capsys.readouterr().out
    assert "the Keras MNIST MLP example" in out
    assert "rates (--p):           0 0.2 0.5" in out
    assert "epochs (--epochs):     5" in out
    assert "none: --variants does not apply" in out
    for field in __import__("dataclasses").fields(get_recipe("mnist-mlp").settings):
        assert f"\n  {field.name} " in out, field.name


def test_user_facing_text_names_sources_by_topic_not_internal_numbers(capsys):
    from dropkit.experiments.recipe import RECIPES

    assert main(["list"]) == 0
    text = capsys.readouterr().out + "".join(
        f"{r.summary} {r.source} {r.notes} {r.settings.__doc__} {r.train.__doc__}"
        for r in RECIPES.values()
    )
    for internal in ("seed 00", "seed's", "slide"):
        assert internal not in text, internal


def test_rates_that_differ_beyond_six_digits_are_two_trials(tmp_path):
    done = _cli("run", "toy-mlp", "--p", "0.1234567", "0.1234568", "--epochs", "1",
                "--out", str(tmp_path / "r"), "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "r").iterdir() if p.is_dir())
    assert names == ["p0.1234567-seed0", "p0.1234568-seed0"]


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    done = _cli("run", "toy-mlp", "--p", "0.5", "--epochs", "3", "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # captured: not a terminal, so no bar was drawn


def test_the_printed_resume_command_resumes(tmp_path):
    """Interrupted (SIGINT) mid-run, the command dropkit prints continues the run."""
    script = (
        "import sys\n"
        "import dropkit.experiments.runner as runner\n"
        "from dropkit.cli import main\n"
        "real = runner.run_recipe\n"
        "def stop(record):\n"
        "    if record['epoch'] == 2:\n"
        "        raise KeyboardInterrupt\n"
        "runner.run_recipe = lambda *a, **k: real(*a, **k, on_epoch=stop)\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["sweep", "toy-mlp", "--p", "0.5", "--epochs", "3", "--seeds", "0", "1",
            "--out", str(tmp_path / "rs"), "--no-progress"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 130, done.stderr
    hint = done.stderr.strip().splitlines()[-1]
    assert "; continue with: dropkit " in hint
    command = hint.split("; continue with: dropkit ", 1)[1]
    resumed = _cli(*shlex.split(command))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "rs" / "p0.5-seed1" / "summary.json").is_file()
    # the original command plus --resume (what a user retypes) works too: same values agree
    again = _cli(*args, "--resume")
    assert again.returncode == 0, again.stderr
    changed = _cli(*args[:-3], "--epochs", "4", "--out", str(tmp_path / "rs"), "--resume")
    assert changed.returncode == 2
    assert "--epochs: --resume continues the run" in changed.stderr


def test_missing_data_offline_fails_with_one_line_naming_the_file(tmp_path):
    offline = {"DROPKIT_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "empty")}
    done = _cli("run", "mnist-mlp", "--out", str(tmp_path / "r"), "--no-progress", env=offline)
    assert done.returncode == 1
    assert not (tmp_path / "r").exists(), "a run that recorded nothing leaves no folder behind"
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert "mnist/" in done.stderr
    assert "DROPKIT_DATA" in done.stderr


def test_existing_run_folder_is_not_overwritten(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("precious")
    done = _cli("run", "toy-mlp", "--out", str(tmp_path / "r"), "--no-progress")
    assert done.returncode == 1
    assert "--resume" in done.stderr
    assert (tmp_path / "r" / "keep.txt").read_text() == "precious"


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU"
)  # fmt: skip
def test_cuda_device_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "toy-mlp", "--device", "cuda", "--out", str(tmp_path / "r")]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_bench_lists_the_benchmark_scripts(capsys):
    if not (Path(__file__).resolve().parents[1] / "bench" / "_harness.py").is_file():
        pytest.skip("not a source checkout")
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "cpu_dropout" in out
    assert "mc_dropout" in out


def test_a_closed_output_pipe_is_not_an_error():
    """``dropkit list | head -0``: the reader is gone before the first write (EPIPE)."""
    child = subprocess.Popen([sys.executable, "-m", "dropkit", "list"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    with child:
        child.stdout.close()  # before the child has imported anything, let alone printed
        err = child.stderr.read()
    assert child.returncode == 0
    assert "error" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_format_table_aligns_columns():
    text = format_table(["a", "bb"], [(1, 0.5), (10, 0.25)])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1", "0.500"]
