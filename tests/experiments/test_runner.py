"""The runner: run-folder contents, valid JSON lines, exact resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dropkit.experiments import ResumeError, apply_overrides, get_recipe, run_recipe
from dropkit.experiments.recipes.digits_mlp import Settings as DigitsSettings
from dropkit.experiments.recipes.mnist_mlp import Settings as MnistSettings
from dropkit.experiments.runs import TrialDir, read_jsonl
from tests.conftest import DATA as SHARED

DIGITS = ["n_train=120", "mc_samples=3", "hidden=32"]


class Interrupt(KeyboardInterrupt):
    """Raised by a test's ``on_epoch`` to stop a run as Ctrl-C would."""


def _without_times(records):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def _metrics(run_dir: Path) -> dict[str, list]:
    config = json.loads((run_dir / "config.json").read_text())
    return {t["name"]: _without_times(read_jsonl(run_dir / t["name"] / "metrics.jsonl"))
            for t in config["trials"]}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_run_folder_holds_config_metrics_checkpoints_summary_and_report(tmp_path):
    out = run_recipe("digits-mlp", out=tmp_path / "run", rates=[0.0, 0.5], epochs=2,
                     overrides=DIGITS, progress=False)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "digits-mlp"
    assert [t["name"] for t in config["trials"]] == ["p0-seed0", "p0.5-seed0"]
    assert config["settings"]["n_train"] == 120
    for trial in config["trials"]:
        folder = out / trial["name"]
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["epoch"] for r in records] == [1, 2]
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "time_s"} <= set(records[0])
        summary = json.loads((folder / "summary.json").read_text())
        assert 0 <= summary["mc_ece"] <= 1
        assert 0 <= summary["test_acc"] <= 1
        assert (folder / "checkpoint.pt").is_file()
        with np.load(folder / "predictions.npz") as saved:
            assert saved["probs"].shape == (len(saved["labels"]), 10)
            np.testing.assert_allclose(saved["probs"].sum(1), 1.0, rtol=1e-5)
    for name in ("report.md", "report.html", "curves.png", "reliability.png", "rates.png"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.part")), "no temporary file is left behind"


def test_p0_summary_has_no_mc_samples_and_dropout_summary_does(tmp_path):
    out = run_recipe("digits-mlp", out=tmp_path / "run", rates=[0.0, 0.5], epochs=1,
                     overrides=DIGITS, progress=False, report=False)  # fmt: skip
    assert json.loads((out / "p0-seed0" / "summary.json").read_text())["mc_samples"] == 0
    assert json.loads((out / "p0.5-seed0" / "summary.json").read_text())["mc_samples"] == 3


@pytest.mark.parametrize("recipe", ["digits-mlp", "toy-mlp"])
def test_resume_after_interrupt_reproduces_the_uninterrupted_run(tmp_path, recipe):
    """Stopped after epoch 2 of the second trial, resumed: the same records, each epoch once."""
    overrides = DIGITS if recipe == "digits-mlp" else []
    kwargs = dict(rates=[0.0, 0.5], epochs=4, overrides=overrides, progress=False, report=False)
    whole = run_recipe(recipe, out=tmp_path / "whole", **kwargs)

    seen = []

    def stop(record):
        seen.append(record["epoch"])
        if len(seen) == 6:  # trial 1 done (4 epochs), then 2 epochs of trial 2
            raise Interrupt

    with pytest.raises(Interrupt):
        run_recipe(recipe, out=tmp_path / "cut", on_epoch=stop, **kwargs)
    cut = tmp_path / "cut"
    assert len(read_jsonl(cut / "p0.5-seed0" / "metrics.jsonl")) == 2
    assert not (cut / "p0.5-seed0" / "summary.json").exists()
    run_recipe(recipe, out=cut, resume=True, progress=False, report=False)
    assert _metrics(cut) == _metrics(whole)
    for name in ("p0-seed0", "p0.5-seed0"):
        a = json.loads((whole / name / "summary.json").read_text())
        b = json.loads((cut / name / "summary.json").read_text())
        assert a == b


def test_resume_drops_a_record_written_after_the_last_checkpoint(tmp_path):
    """Killed between writing epoch 3's record and its checkpoint: epoch 3 is redone once."""
    kwargs = dict(rates=[0.5], epochs=3, overrides=DIGITS, progress=False, report=False)
    whole = run_recipe("digits-mlp", out=tmp_path / "whole", **kwargs)

    checkpoints = {}

    def stop(record):
        trial = TrialDir(tmp_path / "cut" / "p0.5-seed0")
        if record["epoch"] == 2:
            checkpoints[2] = trial.file(TrialDir.CHECKPOINT).read_bytes()
        if record["epoch"] == 3:  # put back epoch 2's checkpoint: epoch 3's was "never written"
            trial.file(TrialDir.CHECKPOINT).write_bytes(checkpoints[2])
            trial.file(TrialDir.SUMMARY).unlink(missing_ok=True)
            raise Interrupt

    with pytest.raises(Interrupt):
        run_recipe("digits-mlp", out=tmp_path / "cut", on_epoch=stop, **kwargs)
    cut = tmp_path / "cut"
    assert [r["epoch"] for r in read_jsonl(cut / "p0.5-seed0" / "metrics.jsonl")] == [1, 2, 3]
    run_recipe("digits-mlp", out=cut, resume=True, progress=False, report=False)
    assert _metrics(cut) == _metrics(whole)


def test_resume_skips_finished_trials(tmp_path):
    out = run_recipe("toy-mlp", out=tmp_path / "run", rates=[0.0], epochs=2, progress=False,
                     report=False)  # fmt: skip
    summary = out / "p0-seed0" / "summary.json"
    before = summary.stat().st_mtime_ns
    calls = []
    run_recipe("toy-mlp", out=out, resume=True, progress=False, report=False,
               on_epoch=calls.append)  # fmt: skip
    assert calls == []
    assert summary.stat().st_mtime_ns == before


def test_existing_folder_needs_resume_and_resume_needs_a_run(tmp_path):
    run_recipe("toy-mlp", out=tmp_path / "run", rates=[0.0], epochs=1, progress=False,
               report=False)  # fmt: skip
    with pytest.raises(ResumeError, match="--resume"):
        run_recipe("toy-mlp", out=tmp_path / "run", rates=[0.0], epochs=1, progress=False)
    with pytest.raises(ResumeError, match="nothing to resume"):
        run_recipe("toy-mlp", out=tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(ResumeError, match="recipe 'toy-mlp'"):
        run_recipe("digits-mlp", out=tmp_path / "run", resume=True, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rates": [1.0]}, r"p must be in \[0, 1\)"),
        ({"rates": [-0.1]}, r"p must be in \[0, 1\)"),
        ({"rates": []}, "at least one"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"seeds": [-1]}, "seeds"),
        ({"overrides": ["bogus=1"]}, "unknown setting"),
        ({"overrides": ["hidden"]}, "key=value"),
        ({"overrides": ["hidden=wide"]}, "type int"),
        ({"overrides": ["lr=-1"]}, "lr must be > 0"),
        ({"variants": ["locked"]}, "unknown variant"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_recipe("digits-mlp", out=tmp_path / "run", progress=False, **kwargs)


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'.*digits-mlp"):
        get_recipe("nope")


def test_overrides_are_typed_by_the_settings_fields():
    s = apply_overrides(MnistSettings(), ["hidden=256,128", "n_train=None", "lr=0.01"])
    assert s.hidden == (256, 128)
    assert s.n_train is None
    assert s.lr == 0.01
    s = apply_overrides(DigitsSettings(), ["n_train=50", "test_size=0.3"])
    assert s.n_train == 50
    assert s.test_size == 0.3
    with pytest.raises(ValueError, match=r"test_size must be in \[0, 1\)"):
        apply_overrides(DigitsSettings(), ["test_size=1.5"])


def test_variants_make_one_trial_per_rate_and_variant_and_one_baseline():
    trials = get_recipe("rnn-locked").trials([0.0, 0.25], [0, 1])
    assert [t["name"] for t in trials] == [
        "p0-none-seed0", "p0-none-seed1", "p0.25-standard-seed0", "p0.25-standard-seed1",
        "p0.25-locked-seed0", "p0.25-locked-seed1",
    ]  # fmt: skip
    assert {t["label"] for t in trials} == {"p=0 none", "p=0.25 standard", "p=0.25 locked"}


TINY = {
    "mnist-mlp": ["n_train=200", "n_test=100", "mc_samples=2"],
    "cnn-spatial": ["n_train=64", "n_test=32", "mc_samples=2", "channels=4,8", "hidden=16"],
    "srivastava-mnist": ["n_train=200", "n_test=100", "mc_samples=2", "hidden=32,32"],
    "rnn-locked": ["steps_per_epoch=2", "eval_windows=4", "n_chars=5000", "hidden_size=16",
                   "embed_dim=8", "block_size=16", "weight_p=0.2", "embed_p=0.1"],
    "transformer-lm": ["steps_per_epoch=2", "eval_windows=4", "n_chars=5000", "n_embd=16",
                       "n_layer=1", "n_head=2", "block_size=16"],
    "uci-mc": ["dataset=yacht", "splits=2", "mc_samples=5"],
}  # fmt: skip


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared data folder is not present")
@pytest.mark.parametrize("recipe", sorted(TINY))
def test_every_data_recipe_runs_on_tiny_settings(tmp_path, monkeypatch, recipe):
    """Each recipe on real data, one or two epochs on a sliver of it: a complete run folder."""
    monkeypatch.setenv("DROPKIT_DATA", str(SHARED))
    epochs = 2 if recipe == "uci-mc" else 1
    out = run_recipe(recipe, out=tmp_path / "run", epochs=epochs, overrides=TINY[recipe],
                     progress=False)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    for trial in config["trials"]:
        records = read_jsonl(out / trial["name"] / "metrics.jsonl")
        expected = 2 if recipe == "uci-mc" else 1  # uci-mc: one record per split
        assert [r["epoch"] for r in records] == list(range(1, expected + 1))
        summary = json.loads((out / trial["name"] / "summary.json").read_text())
        assert all(v is None or np.isfinite(v) for v in summary.values())
    assert (out / "report.md").is_file()
    assert (out / "curves.png").is_file()


def test_mnist1d_recipe_runs(tmp_path):
    pytest.importorskip("mnist1d", reason="mnist1d is not installed")
    out = run_recipe("mnist1d-mlp", out=tmp_path / "run", rates=[0.0, 0.5], epochs=1,
                     overrides=["mc_samples=2"], progress=False)  # fmt: skip
    summary = json.loads((out / "p0.5-seed0" / "summary.json").read_text())
    assert 0.1 < summary["test_acc"] <= 1  # above chance after one epoch of 40 steps
