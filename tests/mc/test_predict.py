"""predict: strategies sample the same distribution, prefix runs once, seeds, fallbacks, errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dropkit import mc
from dropkit import nn as dkn
from tests.stats import assert_within

from .models import Branchy, assert_same_state, bn_state, mlp


def _moments(samples: torch.Tensor) -> tuple:
    """Per-output mean and variance over T, with the standard errors of both estimators."""
    t = samples.shape[0]
    mean, var = samples.mean(0), samples.var(0)
    fourth = (samples - mean).pow(4).mean(0)
    return mean, (var / t).sqrt(), var, ((fourth - var**2).clamp_min(0) / t).sqrt()


class _Connected(nn.Module):
    """DropConnect and a batch-mode DropPath: one mask per forward for the whole batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.inp = nn.Linear(3, 6)
        self.connect = dkn.DropConnectLinear(6, 4, p=0.5)
        self.path = dkn.DropPath(0.4, mode="batch")

    def forward(self, x):
        h = self.inp(x)
        return self.connect(h) + self.path(h[:, :4])


@pytest.mark.parametrize("make", [mlp, _Connected], ids=["mlp", "dropconnect"])
def test_strategies_agree_in_distribution(make):
    model, t = make(), 800
    x = torch.randn(2, 4 if make is mlp else 3, generator=torch.Generator().manual_seed(0))
    ref = _moments(mc.predict(model, x, t, strategy="loop", seed=1, task="regression").samples)
    for i, (strategy, chunk) in enumerate([("batched", None), ("prefix", 300), ("prefix", None)]):
        result = mc.predict(
            model, x, t, strategy=strategy, chunk_size=chunk, seed=2 + i, task="regression"
        )
        assert result.strategy == strategy
        mean, mean_se, var, var_se = _moments(result.samples)
        for j in range(mean.numel()):
            what = f"{strategy}/{chunk} output {j}"
            se = (mean_se.flatten()[j] ** 2 + ref[1].flatten()[j] ** 2).sqrt().item()
            assert_within(mean.flatten()[j].item(), ref[0].flatten()[j].item(), se, what + " mean")
            se = (var_se.flatten()[j] ** 2 + ref[3].flatten()[j] ** 2).sqrt().item()
            assert_within(var.flatten()[j].item(), ref[2].flatten()[j].item(), se, what + " var")


def test_batch_shared_masks_differ_across_the_replicated_copies():
    out = mc.predict(_Connected(), torch.randn(3, 3), 6, strategy="batched", task="regression")
    assert len({tuple(s.flatten().tolist()) for s in out.samples}) == 6


def test_seeded_draws_are_reproducible_and_leave_the_global_generator_alone():
    model, x = mlp(), torch.randn(4, 4)
    state = torch.get_rng_state()
    first = mc.predict(model, x, 5, seed=9)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.samples, mc.predict(model, x, 5, seed=9).samples)
    assert not torch.equal(first.samples, mc.predict(model, x, 5, seed=10).samples)
    unseeded = mc.predict(model, x, 5).samples
    assert not torch.equal(unseeded, mc.predict(model, x, 5).samples)


def test_prefix_runs_the_deterministic_part_once_per_batch():
    model, calls = mlp(), []
    model[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model[3].register_forward_hook(lambda m, i, o: calls.append(-i[0].shape[0]))
    loader = DataLoader(TensorDataset(torch.randn(10, 4)), batch_size=4)
    result = mc.predict(model, loader, 10, strategy="prefix", chunk_size=3)
    assert result.strategy == "prefix"
    assert [c for c in calls if c > 0] == [4, 4, 4, 4, 2]  # two probes, then once a batch
    suffix = [-c for c in calls if c < 0][2:]  # chunks of 3 + 3 + 3 + 1 copies per batch
    assert suffix == [12, 12, 12, 4] * 2 + [6, 6, 6, 2]
    calls.clear()
    mc.predict(model, torch.randn(4, 4), 10, strategy="batched", chunk_size=5)
    assert [c for c in calls if c > 0] == [20, 20]  # same model and input shapes: no probe


def test_the_plan_is_reused_until_the_model_or_the_input_changes(monkeypatch):
    from dropkit.mc import plan as plan_module

    model, probes = mlp(), []
    real = plan_module.plan_sampling
    monkeypatch.setattr(plan_module, "plan_sampling", lambda *a: probes.append(1) or real(*a))

    def probed(x) -> int:
        probes.clear()
        mc.predict(model, x, 4, strategy="batched")
        return len(probes)

    x = torch.randn(3, 4)
    assert probed(x) == 1
    assert probed(torch.randn(3, 4)) == 0  # other values, same structure
    assert probed(torch.randn(5, 4)) == 0  # another batch size
    model[2].p = 0.25  # a rate: probe again
    assert probed(x) == 1
    assert probed(x) == 0
    model[2].p = model[5].p = 0.0  # no dropout left: the probe must see it and refuse
    with pytest.raises(ValueError, match="no stochastic op"):
        mc.predict(model, x, 4)
    model[2].p = model[5].p = 0.5
    assert probed(x) == 1  # probed again after the refusal
    model[2].forward = lambda t: t  # an instance-level forward: probe again
    assert probed(x) == 1
    model.tag = "x"  # a plain attribute of any module
    assert probed(x) == 1
    assert probed(x.double().float()) == 0


def test_predict_leaves_batchnorm_and_flags_alone():
    model = mlp().train()
    before = bn_state(model)
    for strategy in ("loop", "batched", "prefix"):
        mc.predict(model, torch.randn(5, 4), 4, strategy=strategy)
    assert_same_state(before, model)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (Branchy(), "batched"),  # not traceable
        (nn.Sequential(dkn.Dropout(0.5), nn.Linear(4, 2)), "batched"),  # no prefix
        (mlp(), "prefix"),
    ],
)
def test_auto_and_prefix_fall_back_to_batched(model, expected):
    x = torch.randn(3, 4)
    for strategy in ("auto", "prefix"):
        got = mc.predict(model, x, 4, strategy=strategy, task="regression").strategy
        assert got.split(" (")[0] == expected


def test_a_dropout_without_batch_dim_forces_the_loop():
    class Weighted(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.drop = nn.Parameter(torch.randn(4, 2)), dkn.EmbeddingDropout(0.5)

        def forward(self, x):
            return x @ self.drop(self.w)

    assert mc.predict(Weighted(), torch.randn(3, 4), 4).strategy == "loop"
    with pytest.raises(ValueError, match="loop"):
        mc.predict(Weighted(), torch.randn(3, 4), 4, strategy="batched")


def test_progress_bar_uses_tqdm_when_present(monkeypatch):
    loader = DataLoader(TensorDataset(torch.randn(6, 4)), batch_size=4)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # not installed: no bar, no error
    assert mc.predict(mlp(), loader, 3, progress=True).samples.shape == (3, 6, 3)
    seen = []
    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = lambda it, **kw: seen.append(kw["total"]) or it
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    mc.predict(mlp(), loader, 3, progress=True)
    assert seen == [2]


@pytest.mark.parametrize("samples", [0, -1, 2.5, True, "5"])
def test_bad_samples(samples):
    with pytest.raises(ValueError, match="samples"):
        mc.predict(mlp(), torch.randn(2, 4), samples)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "vmap"}, "'loop', 'batched', 'prefix'"),
        ({"task": "segmentation"}, "'classification', 'regression'"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"tau": -1.0}, "tau"),
        ({"seed": -3}, "seed"),
        ({"task": "regression", "targets": torch.zeros(2, 3)}, "tau"),
        ({"targets": torch.zeros(5, dtype=torch.long)}, "targets must have shape"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mc.predict(mlp(), torch.randn(2, 4), 3, **kwargs)


def test_models_with_nothing_to_sample():
    with pytest.raises(ValueError, match=r"no stochastic op runs.*dropout modules: none"):
        mc.predict(nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2)), torch.randn(2, 4), 3)
    with pytest.raises(ValueError, match=r"no stochastic op.*2 \(p=0\.0\).*rate > 0"):
        mc.predict(mlp(p=0.0).apply(_zero_rates), torch.randn(2, 4), 3)


def _zero_rates(module: nn.Module) -> None:
    if isinstance(module, dkn.Dropout):
        module.p = 0.0


def test_bad_outputs_and_batches():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = dkn.Dropout(0.5)

        def forward(self, x):
            return {"out": self.drop(x), "note": "text"}

    pair = Pair()
    with pytest.raises(ValueError, match=r"without 'logits'.*output="):
        mc.predict(pair, torch.randn(2, 4), 3, strategy="loop", consistent=True)
    assert "forward" not in vars(pair.drop)  # the per-predict wrapper is gone after an error
    assert pair.drop.training
    with pytest.raises(TypeError, match="tensor output"):
        mc.predict(pair, torch.randn(2, 4), 3, output="note")
    out = mc.predict(pair, torch.randn(2, 4), 3, output="out", task="regression")
    assert out.samples.shape == (3, 2, 4)
    triples = [(torch.randn(2, 4), torch.zeros(2), torch.zeros(2))]
    with pytest.raises(ValueError, match=r"ambiguous.*target=-1"):
        mc.predict(mlp(), triples, 3)
    with pytest.raises(ValueError, match="empty"):
        mc.predict(mlp(), [], 3)
