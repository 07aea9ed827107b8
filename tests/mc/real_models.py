"""Five models nobody here wrote, tiny and random-init (no hub download): Hugging Face BERT for
sequence classification, GPT-2 LM head and ViT for image classification built from configs, an
``nn.TransformerEncoder`` model and an ``nn.LSTM(dropout=0.3)`` model. Only torch-internal or
attention dropout is non-zero (0.3) unless a builder is asked for more.

Each builder returns ``(model in eval mode, inputs)``; inputs are a tensor or a dict of keyword
tensors, as ``dropkit.mc.predict`` takes them. Weights and inputs come from fixed seeds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _transformers():
    return pytest.importorskip("transformers", reason="transformers not installed ([hf])")


def _ids(n: int, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(1))


def bert(impl: str = "eager", hidden: float = 0.0, n: int = 4):
    """BertForSequenceClassification, 3 labels; only attention_probs_dropout_prob = 0.3
    unless ``hidden`` (hidden_dropout_prob) is given."""
    hf = _transformers()
    cfg = hf.BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=8, num_labels=3,
        hidden_dropout_prob=hidden, attention_probs_dropout_prob=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.BertForSequenceClassification._from_config(cfg, attn_implementation=impl)
    ids = _ids(n, 6, 32)
    return model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def gpt2(impl: str = "sdpa", n: int = 3):
    """GPT2LMHeadModel (logits (N, L, V), V = 32); only attn_pdrop = 0.3."""
    hf = _transformers()
    cfg = hf.GPT2Config(
        vocab_size=32, n_embd=8, n_layer=1, n_head=2, n_positions=8, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.3, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.GPT2LMHeadModel._from_config(cfg, attn_implementation=impl)
    return model.eval(), {"input_ids": _ids(n, 6, 32)}


def vit(n: int = 4):
    """ViTForImageClassification on 3x8x8 images, 3 labels; only the attention's float
    ``attention_dropout`` = 0.3 (no dropout module carries it)."""
    hf = _transformers()
    cfg = hf.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=8, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=16, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = hf.ViTForImageClassification._from_config(cfg)
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model.eval(), {"pixel_values": x}


def encoder(n: int = 4):
    """Sequential(TransformerEncoder(layer(8, 2, 16, dropout=0.3), 1), Flatten, Dropout(0),
    Linear(32, 3)) on (N, 4, 8): the dropout sits in the encoder layer's dropout modules and
    inside its nn.MultiheadAttention."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Flatten(),
        nn.Dropout(0.0), nn.Linear(32, 3),
    )  # fmt: skip
    return model.eval(), torch.randn(n, 4, 8, generator=torch.Generator().manual_seed(1))


class Lstm(nn.Module):
    """Two-layer nn.LSTM(dropout=0.3) (torch's inter-layer dropout) and a linear head on the
    last step: (N, L, 4) -> (N, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 8, 2, dropout=0.3, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0][:, -1])


def lstm(n: int = 4):
    torch.manual_seed(0)
    return Lstm().eval(), torch.randn(n, 3, 4, generator=torch.Generator().manual_seed(1))


BUILDERS = {"bert": bert, "gpt2": gpt2, "vit": vit, "encoder": encoder, "lstm": lstm}


def call(model: nn.Module, inputs):
    """``model(**inputs)`` for a dict, ``model(inputs)`` for a tensor."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def logits(out) -> torch.Tensor:
    """A ModelOutput's ``logits``, or the tensor itself."""
    return out.logits if hasattr(out, "logits") else out
