"""MC dropout on more Hugging Face architectures than the five of test_real_models: tiny
random-init models built from configs (no download), every dropout rate 0.2. The oracle is
the whole model in train mode (none of them has BatchNorm), T forwards by hand: dropkit's
samples must have the same mean and the same spread, so no dropout that the model runs in
training is left out (or sampled once for all copies) in MC mode."""

from __future__ import annotations

import pytest
import torch

from dropkit import mc

hf = pytest.importorskip("transformers", reason="transformers not installed ([hf])")

N, L, T = 3, 8, 64
FAMILY_ALPHA = 1e-4


def z_bound(comparisons: int) -> float:
    """Bonferroni bound on max |z| over ``comparisons`` standard normals (false alarm 1e-4)."""
    q = torch.tensor(1.0 - FAMILY_ALPHA / (2 * comparisons), dtype=torch.float64)
    return max(4.0, float(torch.special.ndtri(q)))


def _ids() -> torch.Tensor:
    return torch.randint(5, 60, (N, L), generator=torch.Generator().manual_seed(1))


def _text() -> dict:
    ids = _ids()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _pixels() -> dict:
    return {"pixel_values": torch.randn(N, 3, 16, 16, generator=torch.Generator().manual_seed(2))}


SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
RATES = dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)


def _configs():
    return {
        "roberta": (hf.RobertaForSequenceClassification,
                    hf.RobertaConfig(vocab_size=64, pad_token_id=1, **SMALL, **RATES), _text),
        "distilbert": (hf.DistilBertForSequenceClassification,
                       hf.DistilBertConfig(vocab_size=64, dim=16, n_layers=2, n_heads=2,
                                           hidden_dim=32, dropout=0.2, attention_dropout=0.2,
                                           seq_classif_dropout=0.2), _text),
        "albert": (hf.AlbertForSequenceClassification,
                   hf.AlbertConfig(vocab_size=64, embedding_size=8, **SMALL, **RATES), _text),
        "bart": (hf.BartForSequenceClassification,
                 hf.BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                               encoder_attention_heads=2, decoder_attention_heads=2,
                               encoder_ffn_dim=32, decoder_ffn_dim=32, dropout=0.2,
                               attention_dropout=0.2, activation_dropout=0.2, pad_token_id=1,
                               eos_token_id=2, bos_token_id=0),
                 lambda: {"input_ids": torch.cat([_ids()[:, :-1], torch.full((N, 1), 2)], 1)}),
        "llama": (hf.LlamaForCausalLM,
                  hf.LlamaConfig(vocab_size=64, num_key_value_heads=1, attention_dropout=0.2,
                                 **SMALL), lambda: {"input_ids": _ids()}),
        "opt": (hf.OPTForCausalLM,
                hf.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                             num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16,
                             dropout=0.2, attention_dropout=0.2), lambda: {"input_ids": _ids()}),
        "t5": (hf.T5ForSequenceClassification,
               hf.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                           num_decoder_layers=1, num_heads=2, dropout_rate=0.2, pad_token_id=0,
                           eos_token_id=1, decoder_start_token_id=0),
               lambda: {"input_ids": torch.cat([_ids()[:, :-1], torch.full((N, 1), 1)], 1)}),
        "beit": (hf.BeitForImageClassification,
                 hf.BeitConfig(image_size=16, patch_size=4, drop_path_rate=0.3,
                               use_mean_pooling=True, **SMALL, **RATES), _pixels),
        "swin": (hf.SwinForImageClassification,
                 hf.SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[1, 1],
                               num_heads=[2, 2], window_size=2, drop_path_rate=0.3, **RATES),
                 _pixels),
    }  # fmt: skip


NAMES = ["roberta", "distilbert", "albert", "bart", "llama", "opt", "t5", "beit", "swin"]


def spread_z(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Brown-Forsythe z per element: mean absolute deviation from the median of samples ``a``
    (T, ...) against that of ``b``; about N(0, 1) when both have the same distribution."""
    da = (a - a.median(0).values).abs()
    db = (b - b.median(0).values).abs()
    se = (da.var(0) / len(a) + db.var(0) / len(b)).sqrt().clamp_min(1e-9)
    return (da.mean(0) - db.mean(0)) / se


@pytest.mark.parametrize("name", NAMES)
def test_mc_samples_what_train_mode_runs(name):
    cls, cfg, inputs = _configs()[name]
    torch.manual_seed(0)
    model = cls._from_config(cfg).eval()
    x = inputs()
    result = mc.predict(model, x, T, seed=0)
    assert result.sampled
    assert not any(m.training for m in model.modules())  # flags restored
    model.train()
    try:
        with torch.no_grad():
            torch.manual_seed(1)
            ref = torch.stack([model(**x).logits.softmax(-1) for _ in range(T)])
    finally:
        model.eval()
    samples = result.samples
    assert samples.shape == ref.shape
    bound = z_bound(2 * ref[0].numel())  # means and spreads
    se = ((samples.var(0) + ref.var(0)) / T).sqrt().clamp_min(1e-7)
    z_mean = ((samples.mean(0) - ref.mean(0)).abs() / se).max().item()
    z_spread = spread_z(samples, ref).abs().max().item()
    assert z_mean <= bound, f"{name}: MC mean differs from train mode by z = {z_mean:.1f}"
    assert z_spread <= bound, f"{name}: MC spread differs from train mode by z = {z_spread:.1f}"
    # the test has power: one draw repeated T times (dropout sampled once) fails it
    assert spread_z(ref[:1].expand_as(ref), ref).abs().max().item() > bound
