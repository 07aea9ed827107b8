"""Sequence-first models: the batch is not in dim 0 of the model input, so copying the input
along dim 0 (batched, prefix) would run the copies one after another through an RNN or let
them attend to each other. dropkit.mc.layout tells this from the sequence modules' own
``batch_first``: auto samples by loop, batched and prefix raise naming the module."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from dropkit import mc
from dropkit import nn as dkn
from dropkit.mc import layout
from dropkit.mc.layout import BatchLayoutError

T = 300
FAMILY_ALPHA = 1e-4


def z_bound(comparisons: int) -> float:
    """Bonferroni bound on max |z| over ``comparisons`` standard normals (false alarm 1e-4)."""
    q = torch.tensor(1.0 - FAMILY_ALPHA / (2 * comparisons), dtype=torch.float64)
    return max(4.0, float(torch.special.ndtri(q)))


class LstmLM(nn.Module):
    """Token ids ``(L, N)`` (or ``(N, L)`` with ``batch_first``) -> logits per step, the layout
    of PyTorch's word-language-model example."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.drop = nn.Embedding(20, 8), nn.Dropout(0.3)
        self.rnn = nn.LSTM(8, 16, 2, dropout=0.3, batch_first=batch_first)
        self.head = nn.Linear(16, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.drop(self.emb(ids)))[0])


class Encoder(nn.Module):
    """``(L, N, E)`` (or ``(N, L, E)``) -> per-position logits, torch's encoder layer."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _inputs(name: str, batch_first: bool, length: int = 7, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name == "lstm":
        ids = torch.randint(0, 20, (n, length), generator=g)
        return ids if batch_first else ids.T.contiguous()
    x = torch.randn(n, length, 8, generator=g)
    return x if batch_first else x.transpose(0, 1).contiguous()


def _model(name: str, batch_first: bool) -> nn.Module:
    return (LstmLM if name == "lstm" else Encoder)(batch_first).eval()


def _train_mode_loop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    try:
        with torch.no_grad():
            return torch.stack([model(x).softmax(-1) for _ in range(T)])
    finally:
        model.eval()


@pytest.mark.parametrize("name", ["lstm", "encoder"])
def test_auto_samples_a_sequence_first_model_by_loop_and_agrees_with_train_mode(name):
    model, x = _model(name, False), _inputs(name, False)
    result = mc.predict(model, x, T, seed=0, class_dim=-1)
    assert result.strategy.startswith("loop (batch not in dim 0: module ")
    torch.manual_seed(1)
    ref = _train_mode_loop(model, x)
    se = ((result.variance + ref.var(0, correction=0)) / T).sqrt().clamp_min(1e-12)
    z = ((result.mean - ref.mean(0)).abs() / se).max().item()
    assert z <= z_bound(ref[0].numel()), f"MC means differ from a train-mode loop: z = {z:.1f}"


@pytest.mark.parametrize("name", ["lstm", "encoder"])
@pytest.mark.parametrize("strategy", ["batched", "prefix"])
def test_batched_and_prefix_raise_naming_the_module(name, strategy):
    model, x = _model(name, False), _inputs(name, False)
    module = "rnn" if name == "lstm" else "encoder.layers.0"
    with pytest.raises(BatchLayoutError, match=rf"module '{module}(\.self_attn)?' \("):
        mc.predict(model, x, 4, strategy=strategy, seed=0, class_dim=-1)


def test_the_old_silent_result_is_caught(monkeypatch):
    """What batched gave before the check: means far from loop's (so the check guards a real
    failure, not a formality)."""
    model, x = _model("lstm", False), _inputs("lstm", False)
    loop = mc.predict(model, x, T, strategy="loop", seed=0, class_dim=-1)
    # without the check the copies run one after another along time
    monkeypatch.setattr(layout, "check", lambda *args: contextlib.nullcontext())
    batched = mc.predict(model, x, T, strategy="batched", seed=0, class_dim=-1)
    se = ((loop.variance + batched.variance) / T).sqrt().clamp_min(1e-12)
    assert ((loop.mean - batched.mean).abs() / se).max().item() > z_bound(loop.mean.numel())


@pytest.mark.parametrize("name", ["lstm", "encoder"])
def test_batch_first_models_keep_the_replicated_strategies(name):
    model, x = _model(name, True), _inputs(name, True)
    for strategy in ("auto", "batched", "prefix"):
        result = mc.predict(model, x, 6, strategy=strategy, seed=0, class_dim=-1)
        assert not result.strategy.startswith("loop"), (strategy, result.strategy)


def test_a_batch_folded_into_dim_0_is_not_mistaken_for_a_sequence():
    """Words flattened into the RNN batch ((N * W, chars, F), batch-first): its batch still
    grows with the copies, so batched runs."""

    class CharWords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.rnn = nn.LSTM(4, 6, 2, dropout=0.3, batch_first=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x):  # (N, W, chars, F)
            n, w = x.shape[:2]
            h = self.rnn(x.flatten(0, 1))[0][:, -1]  # (N * W, 6)
            return self.head(h.view(n, w, -1).mean(1))

    x = torch.randn(3, 5, 4, 4)
    result = mc.predict(CharWords().eval(), x, 6, strategy="batched", seed=0)
    assert result.strategy == "batched"
    assert result.variance.max() > 0


def test_a_new_sequence_length_is_checked_again():
    """The plan is cached; the single-copy batch sizes it holds are those of the batch size it
    was made with, so a new N (here the length, dim 0) probes again and is still caught."""
    model = _model("lstm", False)
    for length in (7, 4, 9):
        result = mc.predict(model, _inputs("lstm", False, length), 5, seed=0, class_dim=-1)
        assert result.strategy.startswith("loop (batch not in dim 0")
        assert result.mean.shape == (length, 3, 20)


def test_loop_takes_an_output_whose_batch_is_not_the_input_dim_0():
    """A sequence-first classifier: (L, N, F) in, (N, C) out; loop just stacks the outputs."""

    class LastStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.rnn = nn.LSTM(8, 16, 2, dropout=0.3)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    x = torch.randn(12, 4, 8)
    for strategy in ("loop", "auto"):
        result = mc.predict(LastStep().eval(), x, 8, strategy=strategy, seed=0)
        assert result.mean.shape == (4, 3)
        assert result.strategy.startswith("loop")


class Locked(nn.Module):
    """dropkit's LockedDropout (mask shared along time) on ``(L, N, F)``, no torch RNN."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.head = nn.Linear(8, 8), nn.Linear(8, 3)
        self.locked = dkn.LockedDropout(0.5, batch_first=batch_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.locked(self.lin(x)))


def test_locked_dropout_on_a_sequence_first_batch_is_not_shared_by_the_copies():
    """Stacked along time, the copies would share LockedDropout's one mask per sequence: zero
    variance. auto samples by loop instead, with the loop's variance."""
    x = torch.randn(6, 4, 8, generator=torch.Generator().manual_seed(2))
    model = Locked(False).eval()
    auto = mc.predict(model, x, 200, seed=0, class_dim=-1)
    assert auto.strategy.startswith("loop (batch not in dim 0: module 'locked' (LockedDropout)")
    loop = mc.predict(model, x, 200, strategy="loop", seed=1, class_dim=-1)
    # each variance from 200 samples has a relative sd of sqrt(2 / 199) = 0.1, so their ratio
    # is within (0.5, 2) with margin > 3.5 sd even if every element moved together; the copies
    # sharing one mask gave 6e-13
    ratio = (auto.variance.mean() / loop.variance.mean()).item()
    assert 0.5 < ratio < 2.0
    with pytest.raises(BatchLayoutError, match="module 'locked' \\(LockedDropout\\)"):
        mc.predict(model, x, 4, strategy="batched", seed=0, class_dim=-1)
    first = Locked(True).eval()
    assert mc.predict(first, x.transpose(0, 1), 4, seed=0, class_dim=-1).strategy == "prefix"


@pytest.mark.parametrize("strategy", ["auto", "loop", "batched"])
def test_consistent_masks_need_the_batch_in_dim_0_under_every_strategy(strategy):
    """consistent=True shares each mask along dim 0; on a sequence-first input that would be
    time steps, not inputs (even by loop, which copies nothing), so it raises."""
    model, x = _model("lstm", False), _inputs("lstm", False)
    with pytest.raises(BatchLayoutError, match=r"consistent=True shares masks.*module 'rnn'"):
        mc.predict(model, x, 4, strategy=strategy, seed=0, consistent=True, class_dim=-1)
    first, y = _model("lstm", True), _inputs("lstm", True)
    result = mc.predict(first, y, 4, strategy=strategy, seed=0, consistent=True, class_dim=-1)
    assert result.variance.max() > 0


def test_auto_falls_back_to_loop_when_the_output_loses_the_replicated_batch():
    """A sequence-first packed GRU: lengths (N,) are not replicated with the (L, N, F) input,
    so the copies are one long sequence and the output keeps N rows, not k x L: auto samples
    by loop, batched raises."""
    from torch.nn.utils.rnn import pack_padded_sequence

    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.rnn, self.head = nn.GRU(8, 16, 2, dropout=0.3), nn.Linear(16, 3)

        def forward(self, x, lengths):
            packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
            return self.head(self.rnn(packed)[1][-1])

    x, lengths = torch.randn(10, 4, 8), torch.tensor([10, 7, 5, 3])
    model = Packed().eval()
    result = mc.predict(model, (x, lengths), 8, seed=0)
    assert result.strategy.startswith("loop (batch not in dim 0: the model output (4, 3)")
    assert result.mean.shape == (4, 3)
    with pytest.raises(BatchLayoutError, match="does not keep the batch"):
        mc.predict(model, (x, lengths), 8, strategy="batched", seed=0)


def test_consistent_check_is_per_model_even_for_equal_plans():
    """The batch-first and the sequence-first model have equal plans (same module names, calls
    and single-copy batch sizes); checking one must not pass the other, in either order, and
    repeated calls stay checked."""
    first, y = _model("lstm", True), _inputs("lstm", True)
    seq, x = _model("lstm", False), _inputs("lstm", False)
    for _ in range(2):
        mc.predict(first, y, 4, seed=0, consistent=True, class_dim=-1)
        with pytest.raises(BatchLayoutError):
            mc.predict(seq, x, 4, seed=0, consistent=True, class_dim=-1)
