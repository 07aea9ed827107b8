"""The example ViT with skip-compute stochastic depth, and the vit-droppath recipe at tiny size."""

from __future__ import annotations

import json

import pytest
import torch

from dropkit import nn as dkn
from dropkit.experiments import apply_overrides, get_recipe, run_recipe
from dropkit.experiments.vit import build_vit

TINY = ["n_train=64", "test_size=0.1", "mc_samples=2", "dim=16", "depth=2", "heads=2",
        "batch_size=32"]  # fmt: skip


def _logits_and_grads(model, images, labels, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    logits = model(images)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return logits, {id(p): p.grad.clone() for p in model.parameters()}  # names change


@pytest.mark.parametrize("seed", [0, 1])
def test_skip_compute_vit_equals_the_ordinary_one_in_training(seed):
    """Same seed: the same rows dropped in every block, so the same logits and gradients."""
    torch.manual_seed(0)
    model = build_vit(dim=16, depth=3, heads=2, drop_path_rate=0.5).double().train()
    images, labels = torch.rand(10, 1, 8, 8, dtype=torch.float64), torch.arange(10)
    ordinary, grads = _logits_and_grads(model, images, labels, seed)
    dkn.apply_stochastic_depth(model)  # in place, same parameter objects
    assert isinstance(model.blocks[0], dkn.stochastic_depth_blocks.SkipBlock)
    skip, skip_grads = _logits_and_grads(model, images, labels, seed)
    torch.testing.assert_close(skip, ordinary, rtol=1e-12, atol=1e-12)
    assert skip_grads.keys() == grads.keys()
    for key, grad in grads.items():
        torch.testing.assert_close(skip_grads[key], grad, rtol=1e-10, atol=1e-12)
    model.eval()
    assert not torch.equal(model(images), skip)  # eval: every branch, no dropping


def test_recipe_runs_every_variant_and_records_epoch_time(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = run_recipe("vit-droppath", out=tmp_path / "run", rates=[0.4], epochs=1,
                     overrides=TINY, progress=False)  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    names = [t["name"] for t in config["trials"]]
    assert names == ["p0.4-ordinary-seed0", "p0.4-skip-seed0"]
    for name in names:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["epoch_s"] > 0
        assert 0 <= summary["test_acc"] <= 1
    assert (out / "report.md").is_file()


def test_bad_settings_raise():
    settings = get_recipe("vit-droppath").settings()
    with pytest.raises(ValueError, match="mode must be row, fixed or batch"):
        apply_overrides(settings, ["mode=sample"])
    with pytest.raises(ValueError, match="divisible by heads"):
        apply_overrides(settings, ["dim=10", "heads=4"])
