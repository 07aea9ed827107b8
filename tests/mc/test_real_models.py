"""MC dropout on models nobody here wrote: tiny random-init Hugging Face models (BERT, GPT-2,
ViT), an nn.TransformerEncoder and an nn.LSTM(dropout=), with only internal dropout non-zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dropkit import mc

transformers = pytest.importorskip("transformers", reason="transformers not installed ([hf])")

Z = 4.0  # z-bound: two-sided 6e-5 false-alarm rate per comparison


def _bert(impl="eager"):
    cfg = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification._from_config(cfg, attn_implementation=impl)
    ids = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(1))
    return model.eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _gpt2(impl="sdpa"):
    cfg = transformers.GPT2Config(
        vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel._from_config(cfg, attn_implementation=impl)
    ids = torch.randint(0, 64, (3, 8), generator=torch.Generator().manual_seed(1))
    return model.eval(), {"input_ids": ids}


def _vit():
    cfg = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification._from_config(cfg)
    return model.eval(), {"pixel_values": torch.randn(4, 3, 8, 8)}


def _encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.3, batch_first=True)
    model = nn.Sequential(
        nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Flatten(),
        nn.Dropout(0.0), nn.Linear(64, 3),
    )  # fmt: skip
    return model.eval(), torch.randn(4, 4, 16)


class _Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(8, 16, 2, dropout=0.3, batch_first=True)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


def _lstm():
    torch.manual_seed(0)
    return _Lstm().eval(), torch.randn(4, 5, 8)


MODELS = {"bert": _bert, "gpt2": _gpt2, "vit": _vit, "encoder": _encoder, "lstm": _lstm}


def _call(model, inputs):
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("name", list(MODELS))
def test_internal_dropout_is_sampled_and_matches_a_train_mode_loop(name):
    model, inputs = MODELS[name]()
    t = 80
    result = mc.predict(model, inputs, t, seed=0, class_dim=-1 if name == "gpt2" else None)
    assert result.variance.max() > 0
    assert result.sampled  # what ran is recorded
    assert not model.training
    assert not any(m.training for m in model.modules())
    # the oracle: the whole model in train mode (no BatchNorm here), T forwards by hand
    model.train()
    with torch.no_grad():
        ref = torch.stack([_logits(_call(model, inputs)).softmax(-1) for _ in range(t)])
    model.eval()
    se = ((result.variance + ref.var(0, correction=0)) / t).sqrt().clamp_min(1e-6)
    z = ((result.mean - ref.mean(0)).abs() / se).max().item()
    assert z <= Z, f"{name}: MC mean differs from the train-mode loop by {z:.1f} standard errors"


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bert_attention_dropout_both_attention_implementations(impl):
    model, inputs = _bert(impl)
    assert mc.predict(model, inputs, 10, seed=0).variance.max() > 0


def test_gpt2_probabilities_sum_to_one_over_the_vocabulary():
    model, inputs = _gpt2()
    result = mc.predict(model, inputs, 6, seed=0)  # ModelOutput logits: classes last
    assert result.samples.shape == (6, 3, 8, 64)
    torch.testing.assert_close(result.mean.sum(-1), torch.ones(3, 8))
    assert result.predictive_entropy.shape == (3, 8)
    with pytest.raises(ValueError, match="class_dim"):
        mc.predict(model, inputs, 2, output=lambda o: o.logits)  # a 3-D tensor, no class_dim


def test_keep_samples_false_gives_the_same_summaries():
    model, inputs = _gpt2()
    kept = mc.predict(model, inputs, 8, seed=3, chunk_size=3)
    lean = mc.predict(model, inputs, 8, seed=3, chunk_size=3, keep_samples=False)
    assert lean.samples is None
    assert lean.num_samples == 8
    for field in ("mean", "variance", "mutual_information", "variation_ratio"):
        torch.testing.assert_close(getattr(lean, field), getattr(kept, field))


@pytest.mark.parametrize("name", list(MODELS))
def test_consistent_masks_agree_across_strategies(name):
    model, inputs = MODELS[name]()
    kw = dict(seed=5, consistent=True, class_dim=-1 if name == "gpt2" else None)
    runs = [mc.predict(model, inputs, 4, strategy=s, **kw) for s in ("loop", "batched", "prefix")]
    for run in runs[1:]:
        torch.testing.assert_close(run.samples, runs[0].samples, atol=1e-5, rtol=1e-5)
    assert runs[0].variance.max() > 0


def test_encoder_prefix_does_not_cache_the_stochastic_encoder():
    model, x = _encoder()
    t, variances = 300, {}
    for strategy in ("loop", "batched", "prefix", "auto"):
        variances[strategy] = mc.predict(model, x, t, seed=1, strategy=strategy).variance
    ref = variances["loop"]
    for strategy, var in variances.items():
        assert var.max() > 0, strategy
        # the mean variance over outputs: its MC error is small next to the value
        rel = ((var.mean() - ref.mean()).abs() / ref.mean()).item()
        assert rel < 0.25, f"{strategy}: variance {var.mean():.2e} vs loop {ref.mean():.2e}"


def test_dataloader_of_dict_batches_needs_target_named():
    model, inputs = _bert()
    labels = torch.tensor([0, 1, 2, 0])
    loader = [{**inputs, "labels": labels}]
    with pytest.raises(ValueError, match="target='labels'"):
        mc.predict(model, loader, 3)
    result = mc.predict(model, loader, 3, target="labels")
    assert result.log_likelihood is not None
    pairs = [(inputs["input_ids"], inputs["attention_mask"])]
    with pytest.raises(ValueError, match="ambiguous"):
        mc.predict(model, pairs, 3)
