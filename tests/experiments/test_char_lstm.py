"""CharLSTM: shapes, state passing, dropout placement (locked vs standard), MC and schedules."""

import pytest
import torch
from torch.nn import functional as F

from dropkit import mc
from dropkit.experiments.char_lstm import CharLSTM
from dropkit.nn import Dropout, EmbeddingDropout, LockedDropout, WeightDrop
from dropkit.schedules import DropoutScheduler

V = 11


def tiny(**kwargs) -> CharLSTM:
    """A model small enough that every test runs in milliseconds."""
    sizes = {"embed_dim": 8, "hidden_size": 12, "num_layers": 2}
    return CharLSTM(V, **{**sizes, **kwargs})


def ids(batch: int = 3, steps: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, steps), generator=torch.Generator().manual_seed(seed))


ALL_ON = {"p": 0.3, "p_embed": 0.2, "p_weight": 0.4}


@pytest.mark.parametrize("variant", ["locked", "standard"])
def test_shapes_dtypes_and_state(variant):
    model = tiny(variant=variant, **ALL_ON)
    logits, state = model(ids(3, 10))
    assert logits.shape == (3, 10, V)
    assert logits.dtype == torch.float32
    assert len(state) == 2
    for h, c in state:
        assert h.shape == c.shape == (1, 3, 12)


@pytest.mark.parametrize("variant", ["locked", "standard"])
def test_state_carried_over_two_halves_equals_one_pass(variant):
    torch.manual_seed(0)
    model = tiny(variant=variant, **ALL_ON).eval()
    x = ids(2, 12)
    full, full_state = model(x)
    first, state = model(x[:, :5])
    second, last_state = model(x[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), full)
    for (h1, c1), (h2, c2) in zip(last_state, full_state, strict=True):
        torch.testing.assert_close(h1, h2)
        torch.testing.assert_close(c1, c2)


def test_dropout_modules_are_where_the_papers_put_them():
    locked = tiny(num_layers=3, variant="locked", **ALL_ON)
    assert isinstance(locked.encoder, EmbeddingDropout)
    assert locked.encoder.embedding is locked.embedding
    assert isinstance(locked.drop_in, LockedDropout)
    assert locked.drop_in.batch_first
    assert len(locked.drop_between) == 2
    assert all(isinstance(d, LockedDropout) for d in locked.drop_between)
    assert isinstance(locked.drop_out, LockedDropout)
    assert all(isinstance(r, WeightDrop) and r.weights == ("weight_hh_l0",) for r in locked.rnns)
    standard = tiny(variant="standard", p=0.3)
    assert isinstance(standard.encoder, torch.nn.Embedding)  # p_embed = 0: no wrapper
    assert all(isinstance(r, torch.nn.LSTM) for r in standard.rnns)  # p_weight = 0
    dropouts = [standard.drop_in, *standard.drop_between, standard.drop_out]
    assert all(type(d) is Dropout and d.p == 0.3 for d in dropouts)


@pytest.mark.parametrize("variant", ["locked", "standard"])
def test_eval_is_deterministic_and_train_samples(variant):
    torch.manual_seed(1)
    model = tiny(variant=variant, **ALL_ON)
    x = ids()
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0], rtol=0, atol=0)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("variant", ["locked", "standard"])
def test_no_dropout_train_equals_eval_exactly(variant):
    model = tiny(variant=variant, p=0.0)
    x = ids()
    train_out = model.train()(x)[0]
    eval_out = model.eval()(x)[0]
    assert torch.equal(train_out, eval_out)


def _input_keep_mask(variant: str) -> torch.Tensor:
    """Which embedded-input entries ``drop_in`` zeroed, ``(B, T, D)``, read off a hook."""
    model = CharLSTM(V, embed_dim=32, hidden_size=8, num_layers=1, p=0.5, variant=variant)
    seen = {}

    def hook(module, inputs, output):
        seen["in"], seen["out"] = inputs[0], output

    model.drop_in.register_forward_hook(hook)
    model(ids(2, 16))
    # Embeddings start uniform in [-0.1, 0.1]: no input entry is exactly 0, so a 0 output is
    # a dropped entry and every kept one is scaled by 1 / (1 - p) = 2.
    assert (seen["in"] != 0).all()
    kept = seen["out"] != 0
    torch.testing.assert_close(seen["out"][kept], 2 * seen["in"][kept])
    return kept


def test_locked_variant_uses_one_mask_for_every_time_step():
    torch.manual_seed(2)
    kept = _input_keep_mask("locked")  # (B=2, T=16, D=32)
    assert (kept == kept[:, :1]).all()
    # Not trivially all kept or all dropped: each has probability 2^-64 at p = 0.5.
    assert kept.any()
    assert not kept.all()


def test_standard_variant_draws_a_fresh_mask_per_time_step():
    torch.manual_seed(3)
    kept = _input_keep_mask("standard")
    # All 15 later steps repeating step 0's 64 mask entries has probability 2^-(64 * 15).
    assert not (kept == kept[:, :1]).all()
    differs = (kept != kept[:, :1]).any(dim=(0, 2))  # per time step
    assert differs[1:].all()  # each step's own draw equals step 0's with probability 2^-64


@pytest.mark.parametrize("variant", ["locked", "standard"])
@pytest.mark.parametrize("tie", [False, True])
def test_every_parameter_gets_a_gradient(variant, tie):
    torch.manual_seed(4)
    model = CharLSTM(V, embed_dim=8, hidden_size=8, variant=variant, tie_weights=tie, **ALL_ON)
    x = ids()
    logits, _ = model(x)
    F.cross_entropy(logits.reshape(-1, V), x.roll(-1, dims=1).reshape(-1)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    if tie:
        assert model.decoder.weight is model.embedding.weight


def test_mc_mode_samples_only_the_dropout():
    torch.manual_seed(5)
    model = tiny(**ALL_ON).eval()
    x = ids()
    reference = model(x)[0]
    with mc.mc_mode(model) as handle:
        assert set(handle.dropout) == {
            "encoder",
            "drop_in",
            "drop_between.0",
            "drop_out",
            "rnns.0",
            "rnns.1",
        }
        assert handle.functional == ()  # no hidden functional dropout to switch on
        assert not model.training
        assert not any(r.module.training for r in model.rnns)  # the LSTMs themselves stay eval
        assert not model.embedding.training
        first, second = model(x)[0], model(x)[0]
        assert not torch.equal(first, second)
    assert not any(m.training for m in model.modules())  # flags restored
    assert torch.equal(model(x)[0], reference)


def test_mc_predict_over_next_character():
    """``mc.predict`` needs one tensor with classes in dim 1: the last step's logits."""

    class NextChar(torch.nn.Module):
        def __init__(self, lm: CharLSTM) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm(x)[0][:, -1]

    model = NextChar(tiny(p=0.3))
    result = mc.predict(model, ids(4, 6), samples=5, strategy="loop", seed=0)
    assert result.samples.shape == (5, 4, V)
    assert not torch.equal(result.samples[0], result.samples[1])
    torch.testing.assert_close(result.mean.sum(dim=1), torch.ones(4))


def test_scheduler_drives_every_dropout_module():
    model = tiny(num_layers=3, **ALL_ON)
    scheduler = DropoutScheduler(model, lambda t: 0.5)
    expected = {"drop_in": 0.15, "drop_between.0": 0.15, "drop_between.1": 0.15}
    expected |= {"drop_out": 0.15, "encoder": 0.1}
    expected |= {f"rnns.{i}": 0.2 for i in range(3)}
    assert scheduler.rates().keys() == expected.keys()
    for name, rate in expected.items():
        assert model.get_submodule(name).p == pytest.approx(rate)


@pytest.mark.parametrize("variant", ["locked", "standard"])
def test_overfits_a_tiny_repeated_string(variant):
    torch.manual_seed(6)
    text = "hello dropout! " * 4
    chars = sorted(set(text))
    data = torch.tensor([[chars.index(ch) for ch in text]])
    x, y = data[:, :-1], data[:, 1:]
    model = CharLSTM(len(chars), embed_dim=16, hidden_size=32, num_layers=1, p=0.1, variant=variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x)[0].reshape(-1, len(chars)), y.reshape(-1)).item()

    initial = eval_loss()
    for _ in range(40):
        model.train()
        loss = F.cross_entropy(model(x)[0].reshape(-1, len(chars)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.5 * initial


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden_size": -1}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": 1.5}, "num_layers"),
        ({"variant": "gal"}, "variant"),
        ({"p": 1.0}, "p"),
        ({"p": -0.1}, "p"),
        ({"p": float("nan")}, "p"),
        ({"p_embed": 1.0}, "p_embed"),
        ({"p_weight": 2}, "p_weight"),
        ({"p_weight": True}, "p_weight"),
        ({"embed_dim": 8, "hidden_size": 12, "tie_weights": True}, "tie_weights"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, named):
    args = {"vocab_size": V, **kwargs}
    with pytest.raises(ValueError, match=rf"CharLSTM: {named}\b"):
        CharLSTM(**args)


def test_bad_inputs_raise():
    model = tiny()
    with pytest.raises(ValueError, match=r"ids must be \(B, T\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_layers=2"):
        model(ids(), state=model(ids())[1][:1])
