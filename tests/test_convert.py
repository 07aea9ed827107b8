"""dropkit.convert: every torch / timm / torchvision dropout module becomes its dropkit twin."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch import nn

import dropkit.nn as dkn
from dropkit import ConversionReport, convert
from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine
from tests.helpers import import_peer
from tests.mc import real_models
from tests.stats import assert_binomial


class Nested(nn.Module):
    """Every torch dropout type, nested in Sequential / ModuleList / ModuleDict, mixed modes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.1), nn.ReLU())
        block0 = nn.Sequential(nn.Conv1d(4, 4, 1), nn.Dropout1d(0.2, inplace=True))
        block1 = nn.ModuleDict({"conv": nn.Conv2d(4, 4, 1), "drop": nn.Dropout2d(0.3)})
        block2 = nn.ModuleDict({"deep": nn.ModuleList([nn.Sequential(nn.Dropout3d(0.4))])})
        self.blocks = nn.ModuleList([block0, block1, block2])
        feature = nn.FeatureAlphaDropout(0.35, inplace=True)
        self.heads = nn.ModuleDict({"alpha": nn.AlphaDropout(0.25), "feature": feature})
        self.blocks[1].eval()  # conv and Dropout2d in eval, the rest in train
        self.heads["alpha"].eval()

    def forward(self, v, x1, x2, x3):
        b, heads = self.blocks, self.heads
        y2 = b[1]["drop"](b[1]["conv"](x2))
        return heads["alpha"](self.stem(v)), heads["feature"](b[0](x1)), y2, b[2]["deep"][0](x3)


# path -> (old type, new type, p, inplace, training)
EXPECTED = {
    "stem.1": ("torch.nn.Dropout", dkn.Dropout, 0.1, False, True),
    "blocks.0.1": ("torch.nn.Dropout1d", dkn.Dropout1d, 0.2, True, True),
    "blocks.1.drop": ("torch.nn.Dropout2d", dkn.Dropout2d, 0.3, False, False),
    "blocks.2.deep.0.0": ("torch.nn.Dropout3d", dkn.Dropout3d, 0.4, False, True),
    "heads.alpha": ("torch.nn.AlphaDropout", dkn.AlphaDropout, 0.25, False, False),
    "heads.feature": ("torch.nn.FeatureAlphaDropout", dkn.FeatureAlphaDropout, 0.35, True, True),
}


def test_every_torch_type_is_replaced_with_rate_inplace_and_mode_kept() -> None:
    model = Nested()
    converted, report = convert(model)
    assert converted is model
    modules = dict(model.named_modules())
    for path, (old, new_type, p, inplace, training) in EXPECTED.items():
        module = modules[path]
        assert type(module) is new_type, path
        assert (module.p, module.inplace, module.training) == (p, inplace, training), path
        assert report.replaced[path] == (old, f"dropkit.nn.{new_type.__name__}")
    assert set(report.replaced) == set(EXPECTED)
    assert report.counts == Counter({old: 1 for old, *_ in EXPECTED.values()})
    assert report.skipped == {}
    # Other modules keep their mode: the conv of the eval block is still in eval.
    assert (model.blocks[1]["conv"].training, model.stem[0].training) == (False, True)
    # dropkit's layers subclass torch's (isinstance checks elsewhere keep working), so check
    # exact types: no torch dropout class is left.
    torch_types = {nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout}
    assert not any(type(m) in torch_types | {nn.FeatureAlphaDropout} for m in model.modules())
    assert all(isinstance(modules[path], nn.modules.dropout._DropoutNd) for path in EXPECTED)


def test_p_overrides_every_rate_and_bad_rates_raise_before_anything_changes() -> None:
    model, report = convert(Nested(), p=0.05)
    assert all(dict(model.named_modules())[path].p == 0.05 for path in report.replaced)
    untouched = Nested()
    with pytest.raises(ValueError, match=r"convert.*\[0, 1\].*p=1\.5"):
        convert(untouched, p=1.5)
    untouched.heads["feature"].p = 2.0  # torch validates p only in its constructor
    with pytest.raises(ValueError, match=r"heads\.feature.*p=2\.0"):
        convert(untouched)
    assert type(untouched.stem[1]) is nn.Dropout  # nothing half-converted


def test_inplace_false_leaves_the_original_untouched() -> None:
    model = Nested()
    before = {path: (type(m), m) for path, m in model.named_modules()}
    converted, report = convert(model, inplace=False)
    assert converted is not model
    assert {path: (type(m), m) for path, m in model.named_modules()} == before
    assert (type(converted.stem[1]), len(report.replaced)) == (dkn.Dropout, len(EXPECTED))
    # The copy has the same weights, not shared ones.
    assert torch.equal(converted.stem[0].weight, model.stem[0].weight)
    assert converted.stem[0].weight is not model.stem[0].weight


def test_eval_outputs_identical_after_conversion() -> None:
    model = Nested().eval()
    x = [torch.randn(s) for s in [(3, 8), (3, 4, 5), (3, 4, 3, 3), (3, 4, 2, 2, 2)]]
    before = model(*(t.clone() for t in x))
    after = convert(model, inplace=False)[0](*(t.clone() for t in x))
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)


# new type -> (input shape, dims sharing one draw)
STATS = {
    dkn.Dropout: ((200, 100), ()),
    dkn.Dropout1d: ((100, 100, 4), (2,)),
    dkn.Dropout2d: ((100, 100, 2, 2), (2, 3)),
    dkn.Dropout3d: ((100, 100, 2, 1, 2), (2, 3, 4)),
    dkn.AlphaDropout: ((200, 100), ()),
    dkn.FeatureAlphaDropout: ((100, 100, 3), (2,)),
    dkn.DropPath: ((10000, 3), (1,)),
}


def kept_mask(module: nn.Module, shape: tuple[int, ...], shared: tuple[int, ...]) -> torch.Tensor:
    """Run ``module`` on ones and return the keep mask, one entry per independent draw."""
    y = module(torch.ones(shape))
    if isinstance(module, dkn.AlphaDropout | dkn.FeatureAlphaDropout):
        a, b = alpha_dropout_affine(module.p)
        kept_value, dropped_value = a + b, a * ALPHA_PRIME + b
    else:
        kept_value, dropped_value = 1.0 / (1.0 - module.p), 0.0  # inverted scaling
    kept = torch.isclose(y, torch.tensor(kept_value))
    assert (kept | torch.isclose(y, torch.tensor(dropped_value))).all(), "only two values"
    if shared:  # all entries of one draw agree
        assert (kept.all(dim=shared) | ~kept.any(dim=shared)).all()
        kept = kept.any(dim=shared)
    return kept


def test_train_mode_kept_fraction_matches_p() -> None:
    torch.manual_seed(1)
    model, report = convert(Nested(), inplace=False)
    model.train()
    modules = dict(model.named_modules())
    for path in report.replaced:
        module = modules[path]
        kept = kept_mask(module, *STATS[type(module)])
        assert_binomial(int(kept.sum()), kept.numel(), 1 - module.p, path)


def test_converting_twice_is_a_no_op() -> None:
    model, first = convert(Nested())
    modules = dict(model.named_modules())
    rates = {path: (type(m), m.p) for path, m in modules.items() if hasattr(m, "p")}
    again, second = convert(model)
    assert again is model
    assert dict(model.named_modules()) == modules  # the very same module objects
    assert {path: (type(m), m.p) for path, m in modules.items() if hasattr(m, "p")} == rates
    assert (second.replaced, second.skipped, second.rate_set) == ({}, {}, {})
    assert str(second).startswith("ConversionReport: nothing to convert (not probed")
    assert first.replaced  # the first one did something


def test_p_on_modules_that_already_are_dropkit_sets_their_rate() -> None:
    model, _ = convert(Nested())
    modules = dict(model.named_modules())
    again, report = convert(model, p=0.3)
    assert again is model
    assert dict(model.named_modules()) == modules
    assert report.replaced == {}
    assert set(report.rate_set) == set(EXPECTED)
    for path, (kind, old, new) in report.rate_set.items():
        assert (modules[path].p, kind, old, new) == (
            0.3,
            f"dropkit.nn.{type(modules[path]).__name__}",
            EXPECTED[path][2],
            0.3,
        )
    assert "p 0.1 -> 0.3" in str(report)
    # A mix: a torch module is replaced at the new rate, a dropkit one gets it set.
    mixed, report = convert(nn.Sequential(nn.Dropout(0.1), dkn.DropPath(0.2)), p=0.4)
    assert (mixed[0].p, mixed[1].p, list(report.replaced), list(report.rate_set)) == (
        0.4,
        0.4,
        ["0"],
        ["1"],
    )


def test_p_on_a_learned_rate_layer_raises_before_anything_changes() -> None:
    model = nn.Sequential(nn.Dropout(0.1), dkn.ConcreteDropout(nn.Linear(4, 4)), dkn.Dropout(0.2))
    with pytest.raises(
        ValueError, match=r"convert: module '1' \(dropkit.nn.*ConcreteDropout\).*p=0.3"
    ):
        convert(model, p=0.3)
    assert (type(model[0]), model[2].p) == (nn.Dropout, 0.2)  # nothing changed
    assert convert(model)[1].rate_set == {}  # without p a learned layer is simply left alone


class DropPath(nn.Module):
    """A hand-written stochastic depth, as found in many repositories (not timm's)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.drop_prob if self.training else 1.0
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep) / keep


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: attention with dropout on the attention probabilities, an
    MLP with dropout, and a hand-written stochastic depth on both residual branches."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.norm1, self.norm2 = heads, nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.1)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, dim), nn.Dropout(0.1)
        )
        self.drop_path = DropPath(0.2)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        probs = self.attn_drop((q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1))
        return self.proj((probs @ v).transpose(1, 2).reshape(n, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def test_transformer_block_converts_dropouts_and_reports_the_hand_written_drop_path() -> None:
    model = TransformerBlock().eval()
    x = torch.randn(2, 5, 16)
    before = model(x)
    converted, report = convert(model, example_inputs=x)
    assert torch.equal(converted(x), before)
    assert not any(m.training for m in model.modules())  # the probe restored every flag
    assert set(report.replaced) == {"attn_drop", "mlp.2", "mlp.4"} == report.called
    assert report.counts == Counter({"torch.nn.Dropout": 3})
    # Named DropPath but not timm's: its semantics are unknown, so it is reported, not mapped.
    assert list(report.skipped) == ["drop_path"]
    assert report.skipped["drop_path"][0] == "tests.test_convert.DropPath"
    assert type(model.drop_path) is DropPath
    lines = str(report).splitlines()
    assert lines[0].split() == ["module", "old", "type", "new", "type", "in", "forward"]
    assert lines[1].split() == ["attn_drop", "torch.nn.Dropout", "dropkit.nn.Dropout", "called"]
    assert lines[4].split()[:3] == ["drop_path", "tests.test_convert.DropPath", "skipped:"]
    assert lines[-1] == "3 replaced, 3 of them called, 1 skipped"


class ResidualBlock(nn.Module):
    """ResNet basic block with channel dropout between the convolutions."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.drop = nn.Dropout2d(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(torch.relu(self.bn1(self.conv1(x))))
        return torch.relu(x + self.bn2(self.conv2(out)))


def test_resnet_block_eval_outputs_identical_and_batchnorm_untouched() -> None:
    model = nn.Sequential(ResidualBlock(), ResidualBlock()).eval()
    x = torch.randn(2, 4, 6, 6)
    before = model(x)
    model[1].train()  # one block in train mode, one in eval: each keeps its mode
    converted, report = convert(model)
    assert report.counts == Counter({"torch.nn.Dropout2d": 2})
    assert [(block.drop.training, block.bn1.training) for block in converted] == [
        (False, False),
        (True, True),
    ]
    converted.eval()
    assert torch.equal(converted(x), before)
    # Documented difference: torch's Dropout2d warns and treats 3-D input as 1-D channel dropout.
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        converted[0].drop(torch.ones(2, 4, 6))


def test_subclasses_are_skipped_and_shared_modules_replaced_once() -> None:
    class ScaledDropout(nn.Dropout):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    shared = nn.Dropout(0.3)
    model = nn.Sequential(shared, ScaledDropout(0.1), nn.Sequential(shared))
    converted, report = convert(model)
    assert type(converted[1]) is ScaledDropout
    assert "subclass" in report.skipped["1"][1]
    assert (type(converted[0]), list(report.replaced)) == (dkn.Dropout, ["0"])
    assert converted[0] is converted[2][0]  # still one module, shared


def test_a_root_dropout_module_is_returned_replaced() -> None:
    model, report = convert(nn.AlphaDropout(0.2).eval())
    assert (type(model), model.p, model.training) == (dkn.AlphaDropout, 0.2, False)
    assert report.replaced == {"": ("torch.nn.AlphaDropout", "dropkit.nn.AlphaDropout")}
    assert isinstance(report, ConversionReport)
    assert str(report).splitlines()[1].startswith("<root>")


def peer_like(qualname: str, module: str, **attrs) -> nn.Module:
    """A stand-in carrying a peer's class name, module path and attributes (identity forward)."""
    layer = type(qualname, (nn.Identity,), {"__module__": module})()
    vars(layer).update(attrs)  # plain attributes, as the peers store them
    return layer


def test_timm_and_torchvision_classes_are_recognised_by_name_and_module_path() -> None:
    model = nn.Sequential(
        peer_like("DropPath", "timm.layers.drop", drop_prob=0.15, scale_by_keep=False),
        peer_like("StochasticDepth", "torchvision.ops.stochastic_depth", p=0.3, mode="batch"),
        peer_like("DropPath", "mymodels.layers", drop_prob=0.2),
    ).eval()
    converted, report = convert(model)
    timm_like, tv_like = converted[0], converted[1]
    assert (timm_like.p, timm_like.mode, timm_like.scale_by_keep) == (0.15, "row", False)
    assert (tv_like.p, tv_like.mode, tv_like.scale_by_keep) == (0.3, "batch", True)
    assert (timm_like.training, tv_like.training) == (False, False)
    assert report.replaced["0"] == ("timm.layers.drop.DropPath", "dropkit.nn.DropPath")
    assert list(report.skipped) == ["2"]


def test_real_timm_drop_path_and_torchvision_stochastic_depth() -> None:
    layers = import_peer("timm.layers")
    ops = import_peer("torchvision.ops")
    model = nn.Sequential(
        layers.DropPath(0.1, scale_by_keep=False), ops.StochasticDepth(0.2, "batch")
    )
    model[1].eval()
    reference = copy.deepcopy(model).eval()
    converted, report = convert(model)
    assert (converted[0].p, converted[0].scale_by_keep, converted[0].mode) == (0.1, False, "row")
    assert (converted[1].p, converted[1].mode, converted[1].training) == (0.2, "batch", False)
    assert report.counts == Counter(
        {"timm.layers.drop.DropPath": 1, "torchvision.ops.stochastic_depth.StochasticDepth": 1}
    )
    x = torch.randn(4, 3)
    assert torch.equal(converted.eval()(x), reference(x))


# ---------------------------------------------------------------- what the forward really runs


def test_hugging_face_drop_path_classes_become_dropkit_drop_path() -> None:
    hf = pytest.importorskip("transformers", reason="transformers not installed ([hf])")
    cfg = hf.BeitConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=16, num_labels=3, drop_path_rate=0.4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.BeitForImageClassification._from_config(cfg).eval()
    reference = copy.deepcopy(model)
    converted, report = convert(model)
    # rates linspace(0, 0.4, layers): BEiT builds the drop path of its second layer only
    assert report.counts["transformers.models.beit.modeling_beit.BeitDropPath"] == 1
    paths = [m for m in converted.modules() if isinstance(m, dkn.DropPath)]
    assert [m.p for m in paths] == [pytest.approx(0.4)]
    assert all((m.mode, m.scale_by_keep, m.training) == ("row", True, False) for m in paths)
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(
        converted(pixel_values=x).logits, reference(pixel_values=x).logits, rtol=0, atol=0
    )
    # in training, each sample is dropped (zeros) or kept and rescaled by 1 / (1 - p)
    layer = paths[0].train()
    h = torch.randn(2000, 5)
    y = layer(h)
    kept = (y != 0).all(1)
    assert bool((y[~kept] == 0).all())
    assert torch.equal(y[kept], h[kept] * torch.tensor(1 / (1 - layer.p)))
    assert_binomial(int(kept.sum()), 2000, 1 - layer.p, "samples kept")


def test_without_example_inputs_the_report_says_not_probed() -> None:
    _model, report = convert(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)))
    assert (report.probed, report.called, report.read_by_parent, report.not_called) == (
        False,
        None,
        None,
        None,
    )
    assert report.status("1") == "not probed"
    assert (
        str(report)
        .splitlines()[-1]
        .endswith("not probed: pass example_inputs= to see which modules the forward runs")
    )


def test_a_module_the_forward_never_calls_is_reported_not_called() -> None:
    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Dropout(0.1), nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Dead()
    _, report = convert(model, example_inputs=torch.randn(3, 4))
    assert (report.called, report.read_by_parent, report.not_called) == (
        frozenset({"used"}),
        {},
        ("unused",),
    )
    assert [report.status(p) for p in ("used", "unused")] == ["called", "not called"]
    assert model.training
    assert model.used.training


@pytest.mark.parametrize(
    ("name", "impl"), [("bert", "eager"), ("bert", "sdpa"), ("gpt2", "eager"), ("gpt2", "sdpa")]
)
def test_hugging_face_attention_reads_the_rate_of_a_module_it_never_calls(
    name: str, impl: str
) -> None:
    model, inputs = real_models.BUILDERS[name](impl)
    converted, report = convert(model, example_inputs=inputs)
    path, attention = {
        "bert": (
            "bert.encoder.layer.0.attention.self.dropout",
            "bert.encoder.layer.0.attention.self",
        ),
        "gpt2": ("transformer.h.0.attn.attn_dropout", "transformer.h.0.attn"),
    }[name]
    assert path in report.replaced
    parent, op, how = report.read_by_parent[path]
    assert (parent, op, report.status(path)) == (
        attention,
        "aten.bernoulli_.float",
        f"rate read by {attention}",
    )
    assert f"puts {attention} in train mode" in how
    # every other replaced module runs; hidden dropout rates are 0 here but the modules run
    assert report.called == set(report.replaced) - {path}
    assert report.not_called == ()
    # Oracle, independent of the probe: the module's forward never runs (a forward that
    # raises goes unnoticed) but its rate is applied (p = 0 makes train mode deterministic).
    module = converted.get_submodule(path)
    module.forward = _raise
    converted.train()
    with torch.no_grad():
        samples = [real_models.logits(real_models.call(converted, inputs)) for _ in range(2)]
        assert not torch.equal(*samples)  # p = 0.3 applied by the attention
        module.p = 0.0
        assert torch.equal(
            *(real_models.logits(real_models.call(converted, inputs)) for _ in range(2))
        )


def _raise(*args):
    raise AssertionError("this dropout module's forward was called")


def test_vit_float_attention_rate_is_reported_as_not_replaceable() -> None:
    model, inputs = real_models.vit()
    _, static = convert(copy.deepcopy(model))
    _, report = convert(model, example_inputs=inputs)
    attention = "vit.layers.0.attention"
    for r in (static, report):
        kind, what = r.internal[attention]
        assert (kind, set(r.internal)) == (
            "transformers.models.vit.modeling_vit.ViTAttention",
            {attention},
        )
        assert what.startswith("float rate attention_dropout=0.3")
    assert (
        "puts vit.layers.0.attention in train mode and samples aten.bernoulli_"
        in report.internal[attention][1]
    )
    assert report.read_by_parent == {}
    # p does not reach a float in a module's forward: it stays 0.3, and the report says so
    again, report = convert(model, p=0.1, example_inputs=inputs)
    assert again.get_submodule(attention).attention_dropout == 0.3
    assert attention in report.internal


def test_transformer_encoder_dropout_modules_are_called_and_mha_is_internal() -> None:
    model, x = real_models.encoder()
    _converted, report = convert(model, example_inputs=x)
    assert set(report.replaced) == {
        "0.layers.0.dropout",
        "0.layers.0.dropout1",
        "0.layers.0.dropout2",
        "2",
    }
    assert report.called == set(report.replaced)  # the eval fast path is not what was probed
    kind, what = report.internal["0.layers.0.self_attn"]
    assert kind == "torch.nn.MultiheadAttention"
    assert what.startswith(
        "dropout=0.3 inside torch's attention op; "
        "dropkit.mc.predict puts 0.layers.0.self_attn in train mode"
    )
    assert set(report.internal) == {"0.layers.0.self_attn"}
    assert "1 not replaceable" in str(report).splitlines()[-1]


def test_lstm_inter_layer_dropout_is_internal_and_p_does_not_change_it() -> None:
    model, x = real_models.lstm()
    converted, report = convert(model, p=0.5, example_inputs=x)
    assert (report.replaced, report.rate_set, converted.rnn.dropout) == ({}, {}, 0.3)
    kind, what = report.internal["rnn"]
    assert kind == "torch.nn.LSTM"
    assert what.startswith(
        "dropout=0.3 inside torch's RNN op; dropkit.mc.predict puts rnn in train mode"
    )
    # one layer: torch applies no inter-layer dropout, so there is nothing to report
    single = nn.LSTM(4, 4, 1)
    single.dropout = 0.3  # set after construction (the constructor warns about this case)
    assert convert(single)[1].internal == {}


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "encoder", "lstm"])
def test_converting_a_real_model_twice_is_a_no_op(name: str) -> None:
    model, inputs = real_models.BUILDERS[name]()
    model, first = convert(model, example_inputs=inputs)
    modules = dict(model.named_modules())
    again, second = convert(model, example_inputs=inputs)
    assert again is model
    assert dict(model.named_modules()) == modules
    assert (second.replaced, second.rate_set, second.internal) == ({}, {}, first.internal)
    assert second.called == first.called
    assert second.read_by_parent == first.read_by_parent


def test_probing_a_model_without_any_dropout_rate_reports_calls_and_does_not_raise() -> None:
    _, report = convert(
        nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)), example_inputs=torch.randn(3, 2)
    )
    assert (report.called, report.read_by_parent, report.internal) == (frozenset({"1"}), {}, {})
    assert report.status("1") == "called"  # it runs, at rate 0: mc.predict would raise, not this
