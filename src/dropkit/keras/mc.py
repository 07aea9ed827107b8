"""Monte Carlo dropout for any Keras model: sample only the dropout layers, summarise as dropkit.mc.

Gal & Ghahramani 2016 (ICML, arXiv:1506.02142). Calling ``model(x, training=True)`` in a loop,
the usual Keras recipe, also runs BatchNormalization on batch statistics (keras-team/keras#9412);
:func:`mc_predict` instead calls the model in inference mode with only the dropout-family
layers (:data:`MC_LAYER_TYPES`) forced to training mode, so BatchNormalization keeps using and
never updates its moving statistics. The summaries are :func:`dropkit.mc`'s own.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

import keras
from dropkit.mc import MCResult
from dropkit.mc.result import TASKS, summarize

from ._base import RateLayer
from .concrete import ConcreteDropout
from .droppath import DropPath
from .embedding import EmbeddingDropout
from .standout import Standout

#: Layers sampled by :func:`mc_predict` (Keras' SpatialDropout1D/2D/3D subclass ``Dropout``).
#: ``GaussianNoise`` is input noise rather than dropout and is left in inference mode.
MC_LAYER_TYPES = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    RateLayer,
    EmbeddingDropout,
    ConcreteDropout,
    Standout,
)

STRATEGIES = ("auto", "batched", "loop")


def _shares_mask_over_batch(layer) -> bool:
    """True when one draw serves the whole batch: replicated copies would share their masks."""
    if isinstance(layer, DropPath):
        return layer.mode == "batch"
    if isinstance(layer, EmbeddingDropout):
        return True
    shape = getattr(layer, "noise_shape", None)
    return shape is not None and len(shape) > 0 and shape[0] == 1


@contextlib.contextmanager
def _dropout_sampled(layers):
    """Force ``training=True`` in the ``call`` of ``layers`` only, restoring them afterwards."""

    def forced(call):
        return lambda *args, training=None, **kwargs: call(*args, training=True, **kwargs)

    # Through __dict__: an instance attribute shadows the class's call without going through
    # the tracking __setattr__ of Keras (and of torch.nn.Module on the torch backend).
    for layer in layers:
        layer.__dict__["call"] = forced(layer.call)
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("call", None)


def _outputs_to_torch(outputs: np.ndarray, task: str, from_logits: bool) -> torch.Tensor:
    """``(T, N, *out)`` as the float tensor :func:`dropkit.mc.result.summarize` expects:
    classes moved from Keras' last dim to dim 2, probabilities turned into log-probabilities."""
    out = torch.from_numpy(np.ascontiguousarray(outputs))
    if task == "regression":
        return out
    if out.dim() < 3:
        raise ValueError(
            "mc_predict: classification needs outputs (N, ..., C) with classes last, got shape "
            f"{tuple(out.shape[1:])}; use task='regression' for other outputs"
        )
    out = torch.movedim(out, -1, 2)
    if from_logits:
        return out
    sums = out.double().sum(2)
    if bool((out < 0).any()) or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(
            "mc_predict: from_logits=False, but the model's outputs are not probabilities "
            "(negative values, or classes not summing to 1); pass from_logits=True for logits"
        )
    # softmax(log p) = p / sum(p): summarize's softmax hands back the model's probabilities.
    return torch.log(out.double().clamp_min(1e-300)).to(out.dtype)


def mc_predict(
    model: keras.Model,
    x,
    samples: int = 50,
    *,
    task: str = "classification",
    from_logits: bool = False,
    strategy: str = "auto",
    batch_size: int = 4096,
    tau: float | None = None,
    targets=None,
) -> MCResult:
    r"""Monte Carlo dropout predictions of a Keras model: T samples and their summaries.

    Each sample is ``model(x, training=False)`` with the dropout layers of the model (every
    :data:`MC_LAYER_TYPES` instance, nested models included) in training mode; everything else,
    BatchNormalization included, stays in inference mode. Classification averages
    probabilities, :math:`\bar p = \frac1T\sum_t p_t`, with predictive entropy
    :math:`H[\bar p]`, expected entropy :math:`\frac1T\sum_t H[p_t]`, mutual information (BALD)
    :math:`H[\bar p] - \frac1T\sum_t H[p_t]` and variation ratio :math:`1 - f_{mode}/T`;
    regression gives the mean and the variance over samples plus :math:`1/\tau` (see
    :class:`dropkit.mc.MCResult`).

    Strategies: ``"batched"`` replicates each input batch ``batch_size // N`` times and runs one
    forward per group of copies (per-element masks make the copies independent samples);
    ``"loop"`` runs one forward per sample; ``"auto"`` picks ``"batched"`` unless a layer draws
    one mask for the whole batch (``DropPath(mode="batch")``, ``EmbeddingDropout``, a
    ``noise_shape`` whose batch entry is 1), where replicated copies would share their masks.

    Shape: x ``(N, *in)`` (one array); model output ``(N, *out)``, classes last for
    classification; ``samples`` of the result ``(T, N, *out)`` with classes moved to dim 2 (the
    layout of :mod:`dropkit.mc`), summaries ``(N, ...)``. Arrays are torch tensors.

    Args:
        model: a built Keras model (any backend) with at least one dropout layer.
        x: the inputs, a NumPy array or a backend tensor.
        samples: T >= 1.
        task: ``"classification"`` or ``"regression"``.
        from_logits: classification outputs are logits (else probabilities, checked).
        strategy: ``"auto"``, ``"batched"`` or ``"loop"``.
        batch_size: most rows per forward pass, replicated copies included.
        tau, targets: the model precision and targets for the log-likelihood, as in
            :func:`dropkit.mc.predict`.
    """
    if task not in TASKS:
        raise ValueError(f"mc_predict: task must be one of {TASKS}, got task={task!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"mc_predict: strategy must be one of {STRATEGIES}, got {strategy!r}")
    for name, value in (("samples", samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"mc_predict: {name} must be an int >= 1, got {name}={value!r}")
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, MC_LAYER_TYPES)
    ]
    if not layers:
        raise ValueError(
            "mc_predict: the model has no dropout layer to sample (looked for "
            f"{', '.join(t.__name__ for t in MC_LAYER_TYPES)}); MC dropout needs one"
        )
    shared = [layer.name for layer in layers if _shares_mask_over_batch(layer)]
    if strategy == "batched" and shared:
        raise ValueError(
            f"mc_predict: strategy='batched' would give replicated copies the same mask in "
            f"{shared} (one draw per batch); use strategy='loop' or 'auto'"
        )
    run = "loop" if strategy == "loop" or (strategy == "auto" and shared) else "batched"
    x = np.asarray(keras.ops.convert_to_numpy(x))
    n = x.shape[0]
    rows = min(n, batch_size)
    copies = 1 if run == "loop" else max(1, batch_size // rows)
    chunks = []
    with _dropout_sampled(layers):
        for start in range(0, n, rows):
            xb = x[start : start + rows]
            per_batch = []
            for _ in range(math.ceil(samples / copies)):
                c = min(copies, samples - sum(o.shape[0] for o in per_batch))
                out = keras.ops.convert_to_numpy(model(np.concatenate([xb] * c), training=False))
                per_batch.append(out.reshape((c, xb.shape[0], *out.shape[1:])))
            chunks.append(np.concatenate(per_batch))
    outputs = _outputs_to_torch(np.concatenate(chunks, axis=1), task, from_logits)
    if targets is not None:
        targets = torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(targets)))
    return summarize(outputs, task, run, tau=tau, targets=targets)
