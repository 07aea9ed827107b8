"""dropkit.keras on one Keras backend, run by test_keras_backends.py in a subprocess whose
``KERAS_BACKEND`` is set (Keras fixes its backend at import, so each backend needs a process).

Keras' random streams are backend-specific, so equality with dropkit's NumPy reference is shown
in distribution: drop counts within 6-sigma binomial bounds (tests/stats.py), and, given the
mask the layer drew, the output equal to the reference's forward under that mask (exact, or to
one float32 rounding where the two compute a quotient in different precisions).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import keras
from dropkit import reference as ref
from dropkit.keras import (
    ConcreteDropout,
    DropBlock2D,
    DropPath,
    EmbeddingDropout,
    LockedDropout,
    SpatialConcreteDropout,
    Standout,
    mc_predict,
)
from dropkit.keras.concrete import concrete_dropout
from dropkit.nn.learned.concrete import ConcreteDropout as TorchConcrete
from dropkit.nn.learned.concrete import SpatialConcreteDropout as TorchSpatialConcrete
from dropkit.nn.learned.concrete import concrete_dropout as torch_concrete_dropout
from dropkit.nn.learned.standout import Standout as TorchStandout
from dropkit.reference.dropblock import dilate
from tests.stats import assert_binomial, assert_within

np_ = keras.ops.convert_to_numpy
RNG = np.random.default_rng(0)


def positive(*shape: int) -> np.ndarray:
    """Inputs with no zeros, so a zero in the output is a dropped position."""
    return RNG.uniform(0.5, 1.5, size=shape).astype(np.float32)


# -- validation and eval ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [DropPath, LockedDropout, DropBlock2D,
                                  lambda rate: EmbeddingDropout(5, 2, rate)])  # fmt: skip
def test_bad_rates_are_rejected_at_construction_and_assignment(make):
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got rate="):
            make(bad)
    with pytest.raises(TypeError, match="rate must be a real number"):
        make("0.5")
    layer = make(0.2)
    with pytest.raises(ValueError, match="rate=2"):
        layer.rate = 2


def test_bad_arguments_and_shapes_name_the_fix():
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch'"):
        DropPath(0.1, mode="sample")
    with pytest.raises(ValueError, match="block_size"):
        DropBlock2D(0.1, block_size=0)
    with pytest.raises(ValueError, match="data_format"):
        DropBlock2D(0.1, data_format="NCHW")
    with pytest.raises(ValueError, match=r"\(N, T, H\) \(3 dims\), got 2 dims"):
        LockedDropout(0.1)(np.ones((2, 3), "float32"), training=True)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) \(4 dims\), got 3 dims"):
        DropBlock2D(0.1, 3)(np.ones((2, 3, 3), "float32"), training=True)
    with pytest.raises(ValueError, match=r"p_init must be in \(0, 1\)"):
        ConcreteDropout(keras.layers.Dense(2), p_init=1.0)
    with pytest.raises(ValueError, match="temperature must be in"):
        ConcreteDropout(keras.layers.Dense(2), temperature=0.0)
    with pytest.raises(TypeError, match="must be a keras Layer"):
        ConcreteDropout(0.2)


@pytest.mark.parametrize("layer", [DropPath(0.5), LockedDropout(0.5), DropBlock2D(0.5, 2)])
def test_eval_is_the_identity_and_rate_one_gives_zeros(layer):
    x = positive(3, 4, 5, 2)[..., 0] if isinstance(layer, LockedDropout) else positive(3, 4, 5, 2)
    np.testing.assert_array_equal(np_(layer(x, training=False)), x)
    np.testing.assert_array_equal(np_(layer(x)), x)  # training defaults to off
    layer.rate = 1.0
    np.testing.assert_array_equal(np_(layer(x, training=True)), np.zeros_like(x))


# -- masks against the NumPy reference ----------------------------------------------------------
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_droppath_rows_are_binomial_and_equal_the_reference_under_their_mask(scale_by_keep):
    p, n = 0.3, 2000
    x = positive(n, 3, 2)
    y = np_(DropPath(p, scale_by_keep=scale_by_keep, seed=1)(x, training=True))
    keep = y.reshape(n, -1)[:, 0] != 0
    assert_binomial(int((~keep).sum()), n, p, "DropPath dropped rows")
    mask = keep.reshape(n, 1, 1)
    expected = ref.DropPath(p, scale_by_keep=scale_by_keep).forward(x, mask=mask)
    np.testing.assert_array_equal(y, expected)


def test_droppath_batch_mode_drops_all_or_nothing():
    layer = DropPath(0.5, mode="batch", seed=2)
    dropped = 0
    for _ in range(40):
        y = np_(layer(positive(8, 3), training=True))
        assert (y == 0).all() or (y != 0).all()
        dropped += int((y == 0).all())
    assert_binomial(dropped, 40, 0.5, "DropPath batch draws dropped")


@pytest.mark.parametrize("batch_first", [True, False])
def test_locked_mask_is_shared_over_time_binomial_and_equal_to_the_reference(batch_first):
    p, shape = 0.4, (30, 20, 16)
    x = positive(*shape)
    y = np_(LockedDropout(p, batch_first=batch_first, seed=3)(x, training=True))
    time = 1 if batch_first else 0
    keep = np.take(y, [0], axis=time) != 0
    np.testing.assert_array_equal(y != 0, np.broadcast_to(keep, shape))  # structure exact
    assert_binomial(int((~keep).sum()), keep.size, p, "LockedDropout dropped units")
    expected = ref.LockedDropout(p, batch_first=batch_first).forward(x, mask=keep)
    np.testing.assert_array_equal(y, expected)


def test_embedding_dropout_drops_rows_as_the_reference():
    p, v, d = 0.25, 3000, 4
    layer = EmbeddingDropout(v, d, rate=p, seed=4)
    ids = np.concatenate([np.arange(v), np.arange(v)])[None]  # every word twice
    y = np_(layer(ids, training=True))[0]
    np.testing.assert_array_equal(y[:v], y[v:])  # a word is dropped wherever it occurs
    weight = np_(layer.embeddings.value)
    keep = (y[:v] != 0).any(axis=1, keepdims=True)
    assert_binomial(int((~keep).sum()), v, p, "EmbeddingDropout dropped rows")
    expected = ref.EmbeddingDropout(p).forward(weight, mask=keep)
    np.testing.assert_array_equal(y[:v], expected)
    np.testing.assert_array_equal(np_(layer(ids, training=False))[0, :v], weight)


@pytest.mark.parametrize(
    ("block", "shape", "shared", "fmt"),
    [(3, (2, 9, 7, 3), False, "channels_last"), (2, (2, 6, 8, 2), True, "channels_last"),
     (4, (1, 2, 5, 6), False, "channels_first"), (9, (2, 4, 5, 2), False, "channels_last")],
)  # fmt: skip
def test_dropblock_geometry_is_the_reference_dilation_of_its_seeds(block, shape, shared, fmt):
    p, seed = 0.3, 5
    x = positive(*shape)
    seeds = np_(DropBlock2D(p, block, shared_channels=shared, data_format=fmt, seed=seed)
                .sample_seeds(shape))  # fmt: skip
    layer = DropBlock2D(p, block, shared_channels=shared, data_format=fmt, seed=seed)
    y = np_(layer(x, training=True))  # same seed: its first draw is `seeds`
    nchw_seeds = np.transpose(seeds, (0, 3, 1, 2))
    spatial = shape[1:3] if fmt == "channels_last" else shape[2:]
    extent = ref.dropblock.block_extent(block, spatial)
    keep = ~dilate(nchw_seeds, extent)  # (N, C or 1, H, W)
    x_nchw = x if fmt == "channels_first" else np.transpose(x, (0, 3, 1, 2))
    expected = ref.DropBlock2d(p, block, shared_channels=shared).forward(x_nchw, mask=keep)
    if fmt == "channels_last":
        expected = np.transpose(expected, (0, 2, 3, 1))
    np.testing.assert_array_equal(y == 0, expected == 0)  # block geometry: exact
    # The per-sample scale count/kept is a float32 quotient here, float64 rounded there.
    np.testing.assert_allclose(y, expected, rtol=2e-7, atol=0)


def test_dropblock_seed_rate_is_gamma():
    p, block, shape = 0.2, 3, (40, 12, 12, 8)
    seeds = np_(DropBlock2D(p, block, seed=6).sample_seeds(shape))
    assert seeds.shape == (40, 10, 10, 8)  # valid region only
    gamma = ref.dropblock.seed_probability(p, block, (12, 12))
    assert_binomial(int(seeds.sum()), seeds.size, gamma, "DropBlock seeds")


# -- Concrete dropout against the torch layer ---------------------------------------------------
def test_concrete_regularizer_equals_the_torch_layer_on_the_same_weights_and_logit():
    dense = ConcreteDropout(keras.layers.Dense(3), p_init=0.2, weight_regularizer=1e-2,
                            dropout_regularizer=1e-1)  # fmt: skip
    dense.build((None, 5))
    dense.p_logit.assign(0.7)
    twin = TorchConcrete(torch.nn.Linear(5, 3), weight_regularizer=1e-2, dropout_regularizer=1e-1)
    with torch.no_grad():
        twin.p_logit.fill_(0.7)
        twin.layer.weight.copy_(torch.from_numpy(np_(dense.layer.kernel.value).T.copy()))
        twin.layer.bias.copy_(torch.from_numpy(RNG.normal(size=3).astype(np.float32)))
    np.testing.assert_allclose(np_(dense.regularization()), twin.regularization().item(), rtol=1e-6)

    conv = SpatialConcreteDropout(keras.layers.Conv2D(4, 3), p_init=0.3, weight_regularizer=1e-2,
                                  dropout_regularizer=1e-1)  # fmt: skip
    conv.build((None, 6, 6, 2))
    twin = TorchSpatialConcrete(torch.nn.Conv2d(2, 4, 3), p_init=0.3, weight_regularizer=1e-2,
                                dropout_regularizer=1e-1)  # fmt: skip
    with torch.no_grad():
        twin.layer.weight.copy_(
            torch.from_numpy(np_(conv.layer.kernel.value).transpose(3, 2, 0, 1).copy())
        )
    np.testing.assert_allclose(np_(conv.regularization()), twin.regularization().item(), rtol=1e-6)
    # add_loss: the regulariser reaches the model's loss.
    conv(positive(2, 6, 6, 2), training=True)
    np.testing.assert_allclose(np_(conv.losses[0]), np_(conv.regularization()), rtol=1e-7)


def test_concrete_relaxed_mask_equals_torch_and_hardens_to_bernoulli():
    x, u = positive(50, 40), RNG.uniform(size=(50, 40)).astype(np.float32)
    logit = np.float32(-0.4)
    mine = np_(concrete_dropout(x, logit, u, 0.1))
    theirs = torch_concrete_dropout(
        torch.from_numpy(x), torch.tensor(logit), torch.from_numpy(u), 0.1
    )
    np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-5, atol=1e-7)
    layer = ConcreteDropout(keras.layers.Dense(1), p_init=0.3, temperature=1e-4, seed=7)
    layer.build((None, 40))
    hard = concrete_dropout(x, layer.p_logit, keras.random.uniform((50, 40), seed=8), 1e-4)
    dropped = np_(hard) < 0.5 * x  # t -> 0: the relaxed mask is a hard Bernoulli(p) draw
    assert_binomial(int(dropped.sum()), dropped.size, 0.3, "hard Concrete drops")


# -- Standout against the NumPy reference and the torch layer -----------------------------------
def standout_trio(alpha: float, beta: float, n_in: int = 6, units: int = 5):
    """A built Keras Standout and its NumPy and torch twins holding the same weights (float32
    in Keras and torch, float64 in the reference). The kernel is positive, so with positive
    inputs every pre-activation is positive and a zero output is a dropped unit."""
    layer = Standout(units, alpha=alpha, beta=beta, seed=11)
    layer.build((None, n_in))
    rng = np.random.default_rng(12)  # the same weights whichever tests ran before
    kernel = rng.uniform(0.05, 0.5, size=(n_in, units)).astype(np.float32)
    bias = rng.uniform(-0.2, 0.2, size=units).astype(np.float32)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    twin = ref.Standout(n_in, units, alpha=alpha, beta=beta)
    twin.params["weight"] = kernel.T.astype(np.float64)
    twin.params["bias"] = bias.astype(np.float64)
    torch_twin = TorchStandout(n_in, units, alpha=alpha, beta=beta)
    with torch.no_grad():
        torch_twin.weight.copy_(torch.from_numpy(kernel.T.copy()))
        torch_twin.bias.copy_(torch.from_numpy(bias))
    return layer, twin, torch_twin


def input_gradient(fn, x: np.ndarray, dout: np.ndarray) -> np.ndarray:
    """d(sum(fn(x) * dout)) / dx with the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: keras.ops.sum(fn(v) * dout))(x))
    if backend == "torch":
        v = torch.tensor(x, requires_grad=True)
        (fn(v) * torch.from_numpy(dout)).sum().backward()
        return v.grad.numpy()
    import tensorflow as tf

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(fn(v) * dout)
    return tape.gradient(total, v).numpy()


def test_standout_eval_is_pi_times_h_as_the_reference_and_the_torch_layer():
    layer, twin, torch_twin = standout_trio(alpha=1.5, beta=-1.0)
    x = RNG.normal(size=(7, 3, 6)).astype(np.float32)  # (N, *, in): some units inactive
    y = np_(layer(x, training=False))
    np.testing.assert_allclose(y, twin.forward(x.astype(np.float64), training=False), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    with torch.no_grad():
        expected = torch_twin.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np_(layer(x)), y)  # training defaults to off
    pre = x @ np_(layer.kernel.value) + np_(layer.bias.value)
    pi = np_(layer.keep_probability(x))
    np.testing.assert_allclose(pi, 1 / (1 + np.exp(-(1.5 * pre - 1.0))), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y, pi * np.maximum(pre, 0), rtol=1e-5, atol=1e-6)


def test_standout_keeps_each_unit_with_its_pi_and_equals_the_reference_under_its_mask():
    """Kept counts are Poisson-binomial with the layer's own pi: checked in total and in the
    units with pi < 0.5 and pi >= 0.5 separately (6 sigma); given the drawn mask, the output
    equals the reference's forward and the torch layer's under that mask."""
    layer, twin, torch_twin = standout_trio(alpha=1.0, beta=-2.0)
    x = positive(4000, 6)
    y = np_(layer(x, training=True))
    keep = y != 0
    pi = np_(layer.keep_probability(x)).astype(np.float64)
    assert pi.min() < 0.4 and pi.max() > 0.6  # noqa: PT018 - keep probabilities on both sides
    for part in (pi < 0.5, pi >= 0.5, np.ones_like(pi, bool)):
        p = pi[part]
        assert_within(keep[part].sum(), p.sum(), math.sqrt((p * (1 - p)).sum()), "kept units")
    expected = twin.forward(x.astype(np.float64), training=True, mask=keep)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=0)
    got = np_(layer(x, training=True, keep_mask=keep))
    np.testing.assert_array_equal(got, y)
    with torch.no_grad():
        theirs = torch_twin.train()(torch.from_numpy(x), mask=torch.from_numpy(keep)).numpy()
    np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=0)


@pytest.mark.parametrize("training", [True, False])
def test_standout_input_gradient_equals_the_reference_backward(training):
    """Training: the mask is a constant, no gradient reaches pi (da = dy * m * [a > 0]);
    eval: both factors of pi * h are differentiated. Both against the NumPy backward."""
    layer, twin, _ = standout_trio(alpha=0.8, beta=0.3)
    x = RNG.normal(size=(9, 6)).astype(np.float32)
    dout = RNG.normal(size=(9, 5)).astype(np.float32)
    keep = RNG.uniform(size=(9, 5)) < 0.6
    mask = keep if training else None
    twin.forward(x.astype(np.float64), training=training, mask=mask)
    expected = twin.backward(dout.astype(np.float64))
    got = input_gradient(lambda v: layer(v, training=training, keep_mask=mask), x, dout)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_standout_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="units must be a positive int"):
        Standout(0)
    with pytest.raises(ValueError, match="alpha must be a finite real number"):
        Standout(3, alpha=float("nan"))
    with pytest.raises(TypeError, match="beta must be a finite real number"):
        Standout(3, beta="1")
    layer = Standout(3)
    x = np.ones((2, 4), "float32")
    with pytest.raises(ValueError, match=r"keep_mask has shape \(2, 4\), expected the output"):
        layer(x, training=True, keep_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="keep_mask is only used in training"):
        layer(x, training=False, keep_mask=np.ones((2, 3), bool))


def test_mc_predict_samples_standout_around_its_eval_output():
    """mc_predict samples Standout; the mean of the samples estimates pi * h (its eval output),
    within 6 standard errors per element."""
    layer, _, _ = standout_trio(alpha=1.0, beta=-1.0)
    model = keras.Sequential([keras.Input((6,)), layer])
    x = positive(3, 6)
    result = mc_predict(model, x, samples=400, task="regression")
    samples = result.samples.numpy()
    assert set(np.unique(samples == 0)) == {True, False}
    expected = np_(model(x))
    pi, h = np_(layer.keep_probability(x)), expected / np_(layer.keep_probability(x))
    se = np.sqrt(pi * (1 - pi)) * h / math.sqrt(400)
    assert (np.abs(samples.mean(0) - expected) <= 6 * se + 1e-6).all()


# -- serialisation ------------------------------------------------------------------------------
def test_every_layer_survives_a_keras_file(tmp_path):
    inp = keras.Input((6, 6, 2))
    h = DropBlock2D(0.2, 3, seed=1)(inp)
    h = SpatialConcreteDropout(keras.layers.Conv2D(3, 3), p_init=0.3)(h)
    h = keras.layers.Reshape((4, 12))(h)
    h = LockedDropout(0.2)(h)
    h = keras.layers.Flatten()(h)
    h = DropPath(0.1, mode="batch", scale_by_keep=False)(h)
    h = Standout(5, alpha=0.5, beta=-0.25, activation="tanh", use_bias=False, seed=3)(h)
    out = ConcreteDropout(keras.layers.Dense(2), p_init=0.25, temperature=0.2)(h)
    model = keras.Model(inp, out)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
        assert as_saved(a.get_config()) == as_saved(b.get_config())
    x = positive(2, 6, 6, 2)
    np.testing.assert_array_equal(np_(model(x)), np_(loaded(x)))
    seq = keras.Sequential([keras.Input((3,)), EmbeddingDropout(5, 2, rate=0.3, seed=2)])
    seq.save(path)
    config = keras.saving.load_model(path).layers[0].get_config()
    assert as_saved(config) == as_saved(seq.layers[0].get_config())


def as_saved(config: dict) -> dict:
    """The config as the JSON in a .keras file holds it (tuples become lists)."""
    return json.loads(json.dumps(config))


# -- MC dropout ---------------------------------------------------------------------------------
def bn_model(rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
        keras.layers.Dropout(rate), keras.layers.Dense(3, activation="softmax"),
    ])  # fmt: skip


def test_mc_predict_samples_dropout_only_batchnorm_stays_in_inference():
    x = positive(5, 4)
    model = bn_model(0.0)
    bn = model.layers[1]
    bn.moving_mean.assign(np.full(8, 0.3, "float32"))
    before = np_(bn.moving_mean.value).copy()
    result = mc_predict(model, x, samples=4)
    np.testing.assert_array_equal(np_(bn.moving_mean.value), before)
    deterministic = np_(model(x, training=False))
    for sample in result.samples.numpy():  # dropout rate 0 + BN in inference = deterministic
        np.testing.assert_allclose(sample, deterministic, rtol=1e-6)
    assert not np.allclose(np_(model(x, training=True)), deterministic)  # BN in training differs
    model = bn_model(0.5)
    result = mc_predict(model, x, samples=6)
    assert float(result.samples.std(0).max()) > 0  # dropout was sampled
    np.testing.assert_array_equal(np_(model(x)), np_(model(x)))  # and switched off again
    mi, h = result.mutual_information, result.predictive_entropy
    assert (mi >= 0).all()
    assert (mi <= h + 1e-6).all()
    np.testing.assert_allclose(result.mean.numpy(), result.samples.mean(0).numpy(), rtol=1e-6)


@pytest.mark.parametrize("strategy", ["batched", "loop"])
def test_mc_predict_masks_are_binomial_for_both_strategies(strategy):
    model = keras.Sequential([keras.Input((50,)), keras.layers.Dropout(0.3)])
    result = mc_predict(model, np.ones((4, 50), "float32"), samples=20, task="regression",
                        strategy=strategy, batch_size=16)  # fmt: skip
    assert result.strategy == strategy
    assert tuple(result.samples.shape) == (20, 4, 50)
    zeros = int((result.samples == 0).sum())
    assert_binomial(zeros, result.samples.numel(), 0.3, f"{strategy} MC drops")


def test_mc_predict_refuses_what_it_cannot_do_right():
    x = positive(3, 4)
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_predict(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), x)
    shared = keras.Sequential([keras.Input((4,)), DropPath(0.5, mode="batch"),
                               keras.layers.Dense(2, activation="softmax")])  # fmt: skip
    with pytest.raises(ValueError, match="same mask"):
        mc_predict(shared, x, samples=2, strategy="batched")
    assert mc_predict(shared, x, samples=2).strategy == "loop"
    logits = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="from_logits=True"):
        mc_predict(logits, x - 2.0, samples=2)
    assert mc_predict(logits, x, samples=2, from_logits=True).mean.shape == (3, 2)


# -- the Keras MNIST MLP at tiny size -----------------------------------------------------------
DATA = Path(
    os.environ.get("DROPKIT_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="trained on the torch backend only, to keep the suite fast")  # fmt: skip
@pytest.mark.skipif(not (DATA / "mnist" / "train-subset-10k.npz").is_file(),
                    reason=f"MNIST data not found under {DATA} (set DROPKIT_DATA)")  # fmt: skip
def test_mnist_mlp_script_learns_and_reports_mc_uncertainty():
    from dropkit.keras.mnist_mlp import run

    n_test = 128
    rows = run(DATA, rates=(0.0, 0.5), epochs=1, n_train=512, n_test=n_test, mc_samples=4)
    chance = n_test * 0.1 + 6 * math.sqrt(n_test * 0.1 * 0.9)  # 6 sigma above guessing
    for row in rows:
        assert row["test_acc"] * n_test > chance
        assert row["mc_acc"] * n_test > chance
        assert 0 <= row["mutual_information"] <= row["entropy"] <= math.log(10) + 1e-6
    assert rows[0]["mutual_information"] < 1e-6 < rows[1]["mutual_information"]
