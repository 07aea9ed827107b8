"""CharGPT: shapes, causality, dropout sites, Standout, MC mode, schedules and the optimiser."""

import math

import pytest
import torch
from torch.nn import functional as F

from dropkit import mc
from dropkit.experiments.char_gpt import CharGPT, configure_optimizer, param_groups
from dropkit.nn import Dropout
from dropkit.nn.learned import Standout
from dropkit.schedules import DropoutScheduler

V = 13
VARIANTS = ["standard", "standout"]


def tiny(**kwargs) -> CharGPT:
    """A model small enough that every test runs in milliseconds."""
    sizes = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
    return CharGPT(V, **{**sizes, **kwargs})


def ids(batch: int = 3, steps: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, steps), generator=torch.Generator().manual_seed(seed))


def site_names(n_layer: int) -> set[str]:
    """The four Dropout(p) sites: embedding sum, attention probabilities, two residuals."""
    names = {"drop"}
    for i in range(n_layer):
        names |= {f"blocks.{i}.attn.attn_drop", f"blocks.{i}.attn.resid_drop"}
        names |= {f"blocks.{i}.mlp.drop"}
    return names


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_dtypes(variant):
    model = tiny(p=0.1, variant=variant)
    assert model(ids(3, 16)).shape == (3, 16, V)
    out = model(ids(2, 5))  # shorter than block_size
    assert out.shape == (2, 5, V)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropout_sites(variant):
    model = tiny(p=0.2, variant=variant)
    dropouts = {name for name, m in model.named_modules() if isinstance(m, Dropout)}
    assert dropouts == site_names(2)
    assert all(model.get_submodule(name).p == 0.2 for name in dropouts)
    standouts = [name for name, m in model.named_modules() if isinstance(m, Standout)]
    if variant == "standout":
        assert standouts == ["blocks.0.mlp.c_fc", "blocks.1.mlp.c_fc"]
        assert model.blocks[0].mlp.c_fc.out_features == 4 * 16
        assert isinstance(model.blocks[0].mlp.c_fc.activation, torch.nn.GELU)
    else:
        assert standouts == []
        assert isinstance(model.blocks[0].mlp.c_fc, torch.nn.Linear)
    # dropkit only: dropkit's modules subclass torch's, so a torch one is one that is not dropkit's
    assert not any(
        isinstance(m, torch.nn.Dropout) and not isinstance(m, Dropout) for m in model.modules()
    )


def test_gpt2_initialisation_and_tied_head():
    torch.manual_seed(0)
    model = CharGPT(V, block_size=16, n_layer=8, n_head=2, n_embd=64)
    assert model.head.weight is model.wte.weight
    assert model.head.bias is None
    fc = model.blocks[0].mlp.c_fc.weight
    proj = torch.cat([b.mlp.c_proj.weight.flatten() for b in model.blocks])
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert all((b.attn.c_attn.bias == 0).all() for b in model.blocks)


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_is_deterministic_and_train_samples(variant):
    torch.manual_seed(1)
    model = tiny(p=0.2, variant=variant)
    x = ids()
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x), model(x))


def test_standout_samples_even_without_dropout_rate():
    """Standout's keep probabilities come from the input: it samples with p = 0 as well."""
    torch.manual_seed(2)
    model = tiny(p=0.0, variant="standout").train()
    x = ids()
    assert not torch.equal(model(x), model(x))


def test_no_dropout_train_equals_eval_exactly():
    model = tiny(p=0.0)
    x = ids()
    assert torch.equal(model.train()(x), model.eval()(x))


@pytest.mark.parametrize("variant", VARIANTS)
def test_causal(variant):
    """Changing the tokens after position t leaves every logit at positions <= t unchanged."""
    torch.manual_seed(3)
    model = tiny(p=0.2, variant=variant).eval()
    x = ids(2, 16)
    t = 6
    changed = x.clone()
    changed[:, t + 1 :] = (x[:, t + 1 :] + 1) % V
    a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_attention_probabilities_are_causal_and_dropped():
    """The hooked attention dropout sees rows that sum to 1 with zeros above the diagonal."""
    torch.manual_seed(4)
    model = tiny(p=0.5).train()
    seen = {}

    def hook(module, inputs, output):
        seen["in"], seen["out"] = inputs[0], output

    model.blocks[0].attn.attn_drop.register_forward_hook(hook)
    model(ids(2, 16))
    att = seen["in"]  # (B, H, T, T)
    assert att.shape == (2, 2, 16, 16)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 2, 16))
    assert (att.triu(1) == 0).all()
    dropped = (seen["out"] == 0) & (att > 0)
    assert dropped.any()
    assert (dropped.float().sum() / (att > 0).sum()).item() < 0.7


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant):
    torch.manual_seed(5)
    model = tiny(p=0.1, variant=variant)
    x = ids()
    F.cross_entropy(model(x).reshape(-1, V), x.roll(-1, dims=1).reshape(-1)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_mc_mode_samples_only_the_dropout(variant):
    torch.manual_seed(6)
    model = tiny(p=0.2, variant=variant).eval()
    x = ids()
    reference = model(x)
    with mc.mc_mode(model) as handle:
        expected = site_names(2)
        if variant == "standout":
            expected |= {"blocks.0.mlp.c_fc", "blocks.1.mlp.c_fc"}
        assert set(handle.dropout) == expected
        assert handle.functional == ()  # attention is explicit: no hidden functional dropout
        assert not model.ln_f.training
        assert not model.blocks[0].ln_1.training
        assert not model.blocks[0].attn.training
        assert not torch.equal(model(x), model(x))
    assert not any(m.training for m in model.modules())  # flags restored
    assert torch.equal(model(x), reference)


def test_mc_predict_over_next_character():
    """``mc.predict`` needs one tensor with classes in dim 1: the last position's logits."""

    class NextChar(torch.nn.Module):
        def __init__(self, lm: CharGPT) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm(x)[:, -1]

    model = NextChar(tiny(p=0.2))
    result = mc.predict(model, ids(4, 8), samples=5, strategy="loop", seed=0)
    assert result.samples.shape == (5, 4, V)
    assert not torch.equal(result.samples[0], result.samples[1])
    torch.testing.assert_close(result.mean.sum(dim=1), torch.ones(4))


@pytest.mark.parametrize("variant", VARIANTS)
def test_scheduler_drives_every_dropout_site(variant):
    model = tiny(p=0.2, variant=variant)
    scheduler = DropoutScheduler(model, lambda t: 0.5)
    # Standout has no settable rate (its keep probabilities are computed), so it is not driven.
    assert set(scheduler.rates()) == site_names(2)
    for name in site_names(2):
        assert model.get_submodule(name).p == pytest.approx(0.1)


def test_param_groups_follow_nanogpt():
    model = tiny()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    ids_decay = {id(p) for p in decay["params"]}
    assert id(model.wte.weight) in ids_decay
    assert id(model.wpe.weight) in ids_decay
    assert id(model.ln_f.weight) in {id(p) for p in no_decay["params"]}
    every = decay["params"] + no_decay["params"]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    optimizer = configure_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(model, -1.0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_overfits_a_tiny_repeated_string(variant):
    torch.manual_seed(7)
    text = "hello dropout! " * 2
    chars = sorted(set(text))
    data = torch.tensor([[chars.index(ch) for ch in text]])
    x, y = data[:, :-1], data[:, 1:]
    model = CharGPT(
        len(chars), block_size=32, n_layer=1, n_head=2, n_embd=32, p=0.1, variant=variant
    )
    optimizer = configure_optimizer(model, lr=1e-2, weight_decay=0.0)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1)).item()

    initial = eval_loss()
    for _ in range(40):
        model.train()
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.5 * initial


def test_sequence_longer_than_block_size_raises_naming_both():
    model = tiny()
    with pytest.raises(ValueError, match=r"T=17 exceeds block_size=16"):
        model(ids(1, 17))
    with pytest.raises(ValueError, match=r"ids must be \(B, T\)"):
        model(torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"block_size": 0}, "block_size"),
        ({"n_layer": 0}, "n_layer"),
        ({"n_head": 0}, "n_head"),
        ({"n_embd": -4}, "n_embd"),
        ({"n_embd": 10, "n_head": 4}, "n_embd must be divisible by n_head"),
        ({"p": 1.0}, "p"),
        ({"p": float("nan")}, "p"),
        ({"variant": "dropconnect"}, "variant"),
        ({"standout_alpha": float("inf")}, "standout_alpha"),
        ({"standout_beta": "0"}, "standout_beta"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, named):
    args = {"vocab_size": V, **kwargs}
    with pytest.raises(ValueError, match=rf"CharGPT: {named}\b"):
        CharGPT(**args)
