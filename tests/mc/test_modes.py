"""mc_mode / enable: only dropout samples, BatchNorm stays in eval, flags are restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc
from dropkit import nn as dkn

from .models import FunctionalNet, assert_same_state, bn_state, mlp


def _peer(class_name: str, module_path: str, **attrs) -> nn.Module:
    """A stand-in for timm's DropPath / torchvision's StochasticDepth (not installed here)."""
    cls = type(class_name, (nn.Module,), {"forward": lambda self, x: x, "__module__": module_path})
    module = cls()
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def _zoo() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.AlphaDropout(0.1),
        dkn.Dropout(0.2), dkn.DropConnectLinear(4, 4), dkn.WeightDrop(nn.Linear(4, 4), "weight"),
        _peer("DropPath", "timm.layers.drop", drop_prob=0.1),
        _peer("StochasticDepth", "torchvision.ops.stochastic_depth", p=0.1, mode="row"),
        nn.InstanceNorm1d(4, track_running_stats=True), nn.ReLU(),
    )  # fmt: skip


DROPOUT = {"2", "3", "4", "5", "6", "7", "8"}


def _flags(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_only_dropout_family_is_in_train_mode():
    model = _zoo().train()
    with mc.mc_mode(model) as handle:
        inside = _flags(model)
    assert set(handle.dropout) == DROPOUT
    assert handle.functional == ()
    assert {n for n, flag in inside.items() if flag} == DROPOUT
    assert not inside["6.module"]  # WeightDrop's wrapped Linear is not itself dropout


def test_peers_are_detected_by_name_and_package_only():
    assert mc.is_dropout_module(_peer("DropPath", "timm.models.layers"))
    assert mc.is_dropout_module(_peer("StochasticDepth", "torchvision.ops"))
    assert not mc.is_dropout_module(_peer("DropPath", "mypackage.layers"))
    assert not mc.is_dropout_module(_peer("Identity", "timm.layers"))


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_flags_restored_after_context(start):
    model = _zoo()
    model.train(start == "train")
    if start == "mixed":
        for i, m in enumerate(model.modules()):
            m.training = i % 3 == 0
    before = _flags(model)
    with mc.mc_mode(model):
        assert _flags(model) != before or start == "mixed"
    assert _flags(model) == before


def test_flags_restored_after_exception():
    model = _zoo().train()
    before = _flags(model)

    def fail():
        with mc.mc_mode(model):
            assert not model[1].training
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert _flags(model) == before


def test_enable_returns_a_handle_that_restores():
    model = _zoo().eval()
    handle = mc.enable(model)
    assert model[2].training
    assert not model[1].training
    handle.restore()
    handle.restore()  # idempotent
    assert not any(m.training for m in model.modules())
    assert "dropout=" in repr(handle)


def test_batchnorm_runs_in_eval_and_keeps_its_statistics_inside_mc_mode():
    model = mlp().train()
    before = bn_state(model)
    seen = []
    model[4].register_forward_hook(lambda m, i, o: seen.append(m.training))
    x = torch.randn(8, 4)
    with mc.mc_mode(model), torch.no_grad():
        outs = torch.stack([model(x) for _ in range(5)])
    assert seen == [False] * 5
    assert_same_state(before, model)
    assert not torch.equal(outs[0], outs[1])  # dropout did sample


def test_functional_dropout_is_sampled_with_bn_in_eval():
    model = FunctionalNet().train()
    before = bn_state(model)
    seen = []
    model.attn.norm.register_forward_hook(lambda m, i, o: seen.append(m.training))
    x = torch.randn(6, 4)
    for strategy in ("loop", "batched"):
        result = mc.predict(model, x, 8, strategy=strategy, seed=0, task="regression")
        assert result.variance.min() > 0  # every output varies across samples
        assert not torch.equal(result.samples[0], result.samples[1])
    assert seen
    assert not any(seen)
    assert_same_state(before, model)
    assert model.training
    assert model.attn.norm.training


def test_auto_detection_lists_the_calling_modules_only():
    assert mc.functional_parents(FunctionalNet(), "auto") == ["attn"]
    assert mc.functional_parents(FunctionalNet(), False) == []
    everything = mc.functional_parents(FunctionalNet(), True)
    assert "attn.norm" not in everything  # running statistics: always eval
    assert {"", "inp", "attn", "attn.q", "out"} <= set(everything)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
    assert mc.functional_parents(layer, "auto") == ["", "self_attn"]
    quiet = nn.Sequential(nn.MultiheadAttention(8, 2, dropout=0.0), nn.LSTM(4, 4, 2, dropout=0.2))
    assert mc.functional_parents(quiet, "auto") == ["1"]


def test_a_calling_module_with_running_stats_stays_in_eval_with_a_warning():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("running_mean", torch.zeros(3))

        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5, training=self.training)

    with pytest.warns(UserWarning, match="running statistics"):
        assert mc.functional_parents(Odd(), "auto") == []


def test_bad_functional_value_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="'auto'"):
        mc.enable(mlp(), functional="yes")
