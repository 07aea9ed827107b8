"""Embedding dropout for Keras: drop whole rows (word types) of the embedding matrix.

Gal & Ghahramani 2016 (arXiv:1512.05287, section 4.1); Merity, Keskar & Socher 2018, AWD-LSTM
(arXiv:1708.02182). Same semantics as :class:`dropkit.nn.EmbeddingDropout` wrapping an
embedding: every occurrence of a dropped word in a batch gets the same zero vector.
"""

from __future__ import annotations

import keras

from ._base import check_rate


@keras.saving.register_keras_serializable(package="dropkit")
class EmbeddingDropout(keras.layers.Embedding):
    r"""A ``keras.layers.Embedding`` whose rows are dropped together in training.

    Train :math:`y = \tilde W[\text{ids}]` with :math:`\tilde W_v = m_v W_v / q`,
    :math:`m_v \sim \mathrm{Bernoulli}(q)` of shape ``(V, 1)``, :math:`q = 1 - \text{rate}`
    (one draw per call, shared by the whole batch, as in AWD-LSTM); eval :math:`y = W[\text{ids}]`.
    ``rate = 1`` gives zeros. Every other argument is ``keras.layers.Embedding``'s.

    Shape: ids ``(*)`` (integers in ``[0, input_dim)``) → ``(*, output_dim)``; mask ``(V, 1)``.

    Args:
        input_dim: vocabulary size V.
        output_dim: embedding size D.
        rate: drop probability of a row, in [0, 1].
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
        >>> import keras, numpy as np
        >>> layer = EmbeddingDropout(10, 4, rate=0.5, seed=0)
        >>> y = keras.ops.convert_to_numpy(layer(np.array([[3, 3]]), training=True))
        >>> y.shape, bool((y[0, 0] == y[0, 1]).all())  # a word is dropped everywhere or nowhere
        ((1, 2, 4), True)
    """

    def __init__(
        self, input_dim: int, output_dim: int, rate: float = 0.1, *, seed: int | None = None,
        **kwargs,
    ) -> None:  # fmt: skip
        super().__init__(input_dim, output_dim, **kwargs)
        self.rate = rate
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"EmbeddingDropout: seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = check_rate(value, "EmbeddingDropout")

    def row_keep(self):
        """Bool keep mask ``(V, 1)``: ``U < q``, True with probability exactly q."""
        u = keras.random.uniform((self.input_dim, 1), seed=self.seed_generator)
        return keras.ops.less(u, 1.0 - self.rate)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return super().call(inputs)
        if inputs.dtype not in ("int32", "int64"):
            inputs = keras.ops.cast(inputs, "int32")
        weight = keras.ops.cast(self.embeddings, self.compute_dtype)
        scale = 0.0 if self.rate == 1.0 else 1.0 / (1.0 - self.rate)
        dropped = keras.ops.where(
            self.row_keep(), weight * keras.ops.cast(scale, weight.dtype), 0.0
        )
        return keras.ops.take(dropped, inputs, axis=0)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
