"""predict writes probabilities into a model output only when nothing else holds it."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from dropkit import mc
from dropkit.mc.ownership import sole_owner
from dropkit.mc.summary import Accumulator

predict_module = importlib.import_module("dropkit.mc.predict")
LIN = nn.Linear(8, 5)


def _owned(model: nn.Module, x: torch.Tensor) -> bool:
    """What predict's batched path asks about a model output (one local name holds it)."""
    out = model(x)
    chunk = out.reshape(2, 2, *out.shape[1:])
    del out
    return sole_owner(chunk)


class Kept(nn.Module):
    """Keeps its output in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        out = LIN(x)
        self.seen.append(out)
        return out


class Stored(nn.Module):
    """Keeps its output, and a copy of it, as attributes."""

    def forward(self, x):
        self.last = LIN(x)
        self.copy = self.last.clone()
        return self.last


class BaseStored(nn.Module):
    """Returns a view of a tensor it keeps."""

    def forward(self, x):
        self.flat = LIN(x.reshape(-1, 8))
        return self.flat.view(*x.shape[:-1], 5)


class Sliced(nn.Module):
    def forward(self, x):
        return x[..., :5]


class Param(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 5))

    def forward(self, x):
        return self.w


@pytest.mark.parametrize(
    ("model", "owned"),
    [
        (LIN, True),  # a 3-D Linear output: a view of a 2-D result nobody else holds
        (Kept(), False),
        (Stored(), False),
        (BaseStored(), False),
        (nn.Identity(), False),  # the caller's input itself
        (Sliced(), False),
        (Param(), False),
    ],
    ids=["linear", "kept", "stored", "base-stored", "identity", "slice", "parameter"],
)
def test_only_an_output_nobody_else_holds_is_owned(model, owned):
    x = torch.randn(4, 3, 8)
    with torch.no_grad():
        assert _owned(model, x) is owned
        assert _owned(LIN, x[:, 0]) is True  # a plain 2-D output, no base
    assert _owned(LIN, x) is False  # autograd records the output


def test_hugging_face_logits_are_owned():
    hf = pytest.importorskip("transformers")
    cfg = hf.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.GPT2LMHeadModel._from_config(cfg).eval()
    ids = torch.randint(0, 50, (4, 6))

    def owned():
        out = model(input_ids=ids).logits
        chunk = out.reshape(2, 2, *out.shape[1:])
        del out
        return sole_owner(chunk)

    with torch.no_grad():
        assert owned()


def test_predict_leaves_an_output_the_model_keeps_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Dropout(0.3), Stored())
    result = mc.predict(model, torch.randn(6, 8), 4)
    stored = model[1]
    assert torch.equal(stored.last, stored.copy)  # still logits, not probabilities
    torch.testing.assert_close(result.samples.sum(-1), torch.ones(4, 6))


def test_in_place_probabilities_give_the_same_result(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.Linear(16, 7))
    x = torch.randn(5, 8)
    seen = []
    add = Accumulator.add

    def spy(self, chunk, owned=False):
        seen.append(owned)
        return add(self, chunk, owned)

    monkeypatch.setattr(Accumulator, "add", spy)
    owned = mc.predict(model, x, 9, seed=1)
    assert seen == [True]
    monkeypatch.setattr(predict_module, "sole_owner", lambda t: False)
    copied = mc.predict(model, x, 9, seed=1)
    names = ("mean", "variance", "samples", "predictive_entropy", "expected_entropy")
    for name in (*names, "mutual_information", "variation_ratio"):
        assert torch.equal(getattr(owned, name), getattr(copied, name)), name
