"""The deterministic pieces needed to train a network by hand: Linear, ReLU, Embedding,
softmax cross-entropy and Sequential (the micrograd / cs231n textbook layers)."""

from __future__ import annotations

import numpy as np

from .base import Layer, RngLike, as_float_array, check_positive_int, make_rng
from .embedding import EmbeddingDropout


def init_weight(
    shape: tuple[int, int], fan_in: int, std: float | None, rng: np.random.Generator, dtype
) -> np.ndarray:
    """``N(0, std^2)`` when ``std`` is given, else torch's default ``U(-1/sqrt(fan_in), +)``."""
    if std is not None:
        return (std * rng.standard_normal(shape)).astype(dtype)
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


class Linear(Layer):
    r"""Affine map :math:`y = x W^\top + b`.

    Backward: :math:`dx = dy\,W`, :math:`dW = dy^\top x`, :math:`db = \sum_n dy_n` (summed over
    all leading dims).

    Shape: x ``(*, in_features)``; y ``(*, out_features)``; W ``(out_features, in_features)``.

    Args:
        in_features, out_features: sizes.
        bias: learn an additive bias (zeros at init).
        init_std: draw W from ``N(0, init_std^2)``; default ``U(-1/sqrt(in), 1/sqrt(in))``.
        rng: generator, seed or None (used for the initialisation only).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init_std: float | None = None,
        rng: RngLike = None,
        dtype: type = np.float64,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", type(self).__name__)
        self.out_features = check_positive_int(out_features, "out_features", type(self).__name__)
        init_rng = make_rng(rng)
        self.params["weight"] = init_weight(
            (self.out_features, self.in_features), self.in_features, init_std, init_rng, dtype
        )
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=dtype)

    def _check_features(self, x: np.ndarray) -> None:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (*, {self.in_features}), "
                f"got shape {x.shape}"
            )

    def _affine(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        out = x @ weight.T
        if "bias" in self.params:
            out = out + self.params["bias"]
        return out

    def _affine_backward(self, x: np.ndarray, weight: np.ndarray, dout: np.ndarray):
        """Return (dx, dW_effective) and set the bias gradient."""
        x2 = x.reshape(-1, x.shape[-1])
        d2 = dout.reshape(-1, dout.shape[-1])
        if "bias" in self.params:
            self.grads["bias"] = d2.sum(axis=0)
        return dout @ weight, d2.T @ x2

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        x = as_float_array(x, type(self).__name__)
        self._check_features(x)
        out = self._affine(x, self.params["weight"])
        self._save(out.shape, x=x)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, dout = self._saved(dout)
        dx, self.grads["weight"] = self._affine_backward(cache["x"], self.params["weight"], dout)
        return dx

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={'bias' in self.params}"
        )


class ReLU(Layer):
    r"""Rectifier :math:`y = \max(x, 0)`; backward :math:`dx = dy \odot [x > 0]`."""

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        x = as_float_array(x, "ReLU")
        positive = x > 0
        self._save(x.shape, positive=positive)
        return np.where(positive, x, x.dtype.type(0))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, dout = self._saved(dout)
        return np.where(cache["positive"], dout, dout.dtype.type(0))


class SoftmaxCrossEntropy(Layer):
    r"""Mean softmax cross-entropy of logits against integer labels.

    :math:`L = -\frac1N \sum_n \log \mathrm{softmax}(z_n)_{y_n}`, computed with the log-sum-exp
    shift for stability. Backward: :math:`dz = (\mathrm{softmax}(z) - \mathrm{onehot}(y)) / N`,
    times the incoming scalar gradient.

    Shape: logits ``(N, K)``, labels ``(N,)`` ints in ``[0, K)``; output a 0-d array.
    ``training`` is accepted for a uniform layer interface and ignored.
    """

    def forward(self, logits: np.ndarray, labels: np.ndarray, training: bool = True) -> np.ndarray:
        logits = as_float_array(logits, "SoftmaxCrossEntropy", "logits")
        labels = np.asarray(labels)
        if logits.ndim != 2:
            raise ValueError(
                f"SoftmaxCrossEntropy expects logits of shape (N, K), got shape {logits.shape}"
            )
        n, k = logits.shape
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"SoftmaxCrossEntropy: labels must be integers, got {labels.dtype}")
        if labels.shape != (n,):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must have shape ({n},), got {labels.shape}"
            )
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"SoftmaxCrossEntropy: labels must be in [0, {k}), got range "
                f"[{labels.min()}, {labels.max()}]"
            )
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(n), labels].mean()
        self._save((), probs=np.exp(log_probs), labels=labels)
        return np.asarray(loss, dtype=logits.dtype)

    def backward(self, dout: float | np.ndarray = 1.0) -> np.ndarray:
        cache, dout = self._saved(np.asarray(dout, dtype=np.float64))
        probs, labels = cache["probs"], cache["labels"]
        n = labels.shape[0]
        grad = probs.copy()
        grad[np.arange(n), labels] -= 1.0
        return grad * probs.dtype.type(dout / n)  # keep the logits' dtype


class Embedding(Layer):
    r"""Lookup table :math:`y = \tilde W[\text{ids}]` with optional embedding dropout.

    :math:`\tilde W` is ``W`` after :class:`EmbeddingDropout` with rate ``p`` (rows dropped and
    scaled by 1/q in training). Backward scatters :math:`dy` into the rows that were looked up
    and passes it through the embedding dropout: :math:`dW = \mathrm{EmbDrop}'(\text{scatter}(dy))`.
    The ids get no gradient (``backward`` returns None).

    Shape: ids ``(*)`` integers in ``[0, V)``; output ``(*, D)``; W ``(V, D)``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        p: float = 0.0,
        *,
        rng: RngLike = None,
        dtype: type = np.float64,
    ) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "Embedding")
        self.rng = make_rng(rng)
        self.params["weight"] = self.rng.standard_normal(
            (self.num_embeddings, self.embedding_dim)
        ).astype(dtype)
        self.dropout = EmbeddingDropout(p, rng=self.rng)

    @property
    def p(self) -> float:
        """Embedding-dropout rate (validated on assignment, e.g. by a schedule)."""
        return self.dropout.p

    @p.setter
    def p(self, value: float) -> None:
        self.dropout.p = value

    def children(self) -> list[Layer]:
        return [self.dropout]

    def forward(self, ids: np.ndarray, training: bool = True) -> np.ndarray:
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"Embedding: ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(
                f"Embedding: ids must be in [0, {self.num_embeddings}), got range "
                f"[{ids.min()}, {ids.max()}]"
            )
        table = self.dropout.forward(self.params["weight"], training)
        out = table[ids]
        self._save(out.shape, ids=ids)
        return out

    def backward(self, dout: np.ndarray) -> None:
        cache, dout = self._saved(dout)
        dtable = np.zeros_like(self.params["weight"], dtype=dout.dtype)
        np.add.at(dtable, cache["ids"].reshape(-1), dout.reshape(-1, self.embedding_dim))
        self.grads["weight"] = self.dropout.backward(dtable)
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, p={self.dropout.p}"


class Sequential(Layer):
    """Chain of layers: forward left to right, backward right to left."""

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes reference layers, got {type(layer).__name__}")
        self.layers = list(layers)

    def children(self) -> list[Layer]:
        return list(self.layers)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"
