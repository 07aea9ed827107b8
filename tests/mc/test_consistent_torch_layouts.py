"""consistent=True where torch's own modules lay the batch out in another dim: sequence-first
transformer layers (``(L, N, E)``) and ``nn.MultiheadAttention``'s ``(N * heads, L, S)``
attention weights (``need_weights=True``, a key padding mask). Every input must see the same
T masks: equal inputs give equal samples, and every strategy gives the same samples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc


class Head(nn.Module):
    """``body`` on ``(N, L, E)`` inputs (transposed for a sequence-first body), mean over
    positions, a linear head to 3 classes."""

    def __init__(self, body: nn.Module, call) -> None:
        super().__init__()
        self.body, self.call, self.head = body, call, nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.call(self.body, x).mean(1))


def _seq_first(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return body(x.transpose(0, 1)).transpose(0, 1)


def _padding_mask(x):
    mask = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
    mask[:, -1] = True  # the last key is padding: torch takes its general (non-fused) path
    return mask


MODELS = {
    "encoder seq-first": lambda: Head(
        nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3), 2, enable_nested_tensor=False
        ),
        _seq_first,
    ),
    "decoder seq-first": lambda: Head(
        nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16, dropout=0.3), 1),
        lambda b, x: b(x.transpose(0, 1), x.transpose(0, 1)).transpose(0, 1),
    ),
    # nn.Transformer builds its encoder with the nested-tensor fast path on and warns that
    # a sequence-first layout cannot use it
    "transformer seq-first": lambda: Head(
        nn.Transformer(8, 2, 1, 1, 16, dropout=0.3),
        lambda b, x: b(x.transpose(0, 1), x.transpose(0, 1)[:3]).transpose(0, 1),
    ),
    "mha need_weights": lambda: Head(
        nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True),
        lambda b, x: b(x, x, x)[0],  # need_weights=True is MHA's default
    ),
    "mha key padding": lambda: Head(
        nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True),
        lambda b, x: b(x, x, x, key_padding_mask=_padding_mask(x), need_weights=False)[0],
    ),
    "mha seq-first": lambda: Head(
        nn.MultiheadAttention(8, 2, dropout=0.3),
        lambda b, x: b(*(x.transpose(0, 1),) * 3)[0].transpose(0, 1),
    ),
}


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(1))
    x[2] = x[0]  # equal inputs must get equal samples
    return model, x


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning")
@pytest.mark.parametrize("name", MODELS)
def test_every_input_sees_the_same_masks_under_every_strategy(name):
    model, x = _model(name)
    runs = [
        mc.predict(model, x, 6, strategy=s, chunk_size=c, seed=7, consistent=True)
        for s, c in (("loop", None), ("batched", None), ("batched", 4), ("prefix", None))
    ]
    loop = runs[0].samples
    torch.testing.assert_close(loop[:, 2], loop[:, 0], atol=0, rtol=0)  # shared masks
    assert not torch.allclose(loop[0], loop[1])  # masks differ across MC samples
    for run in runs[1:]:
        torch.testing.assert_close(run.samples, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["encoder seq-first", "mha need_weights"])
def test_without_consistent_equal_inputs_get_independent_masks(name):
    """The contrast: the shared masks above come from consistent=True, not from the model."""
    model, x = _model(name)
    samples = mc.predict(model, x, 6, seed=7).samples
    assert not torch.allclose(samples[:, 2], samples[:, 0])
