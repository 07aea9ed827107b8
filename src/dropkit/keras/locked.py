"""Locked (variational) dropout for sequences in Keras: one mask per sequence, shared over time.

Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent Neural
Networks" (arXiv:1512.05287). Keras' ``Dropout(noise_shape=(None, 1, None))`` gives the same
mask geometry; this layer names it, checks the rank and offers time-major input.
"""

from __future__ import annotations

import keras

from ._base import RateLayer, check_rank, masked_scale


@keras.saving.register_keras_serializable(package="dropkit")
class LockedDropout(RateLayer):
    r"""Dropout whose mask is constant along the time axis, one mask per sequence.

    Train :math:`y_t = m \odot x_t / q` for every step t, :math:`m \sim \mathrm{Bernoulli}(q)`,
    :math:`q = 1 - \text{rate}`; eval :math:`y = x`. Batch-first input ``(N, T, H)`` (Keras'
    RNN layout, the default) uses a mask ``(N, 1, H)``; time-major ``(T, N, H)``
    (``batch_first=False``) a mask ``(1, N, H)``. ``rate = 1`` gives zeros.

    Shape: ``(N, T, H)`` or ``(T, N, H)``, strictly 3 dims; output the same.

    Args:
        rate: drop probability in [0, 1].
        batch_first: True for ``(N, T, H)`` input.
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
        >>> import keras, numpy as np
        >>> layer = LockedDropout(0.5, seed=1)
        >>> y = keras.ops.convert_to_numpy(layer(np.ones((2, 5, 3), "float32"), training=True))
        >>> bool((y == y[:, :1]).all())  # the same mask at every time step
        True
    """

    def __init__(
        self, rate: float = 0.5, batch_first: bool = True, *, seed: int | None = None, **kwargs
    ) -> None:
        super().__init__(rate, seed=seed, **kwargs)
        self.batch_first = bool(batch_first)

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, 1, H)`` for batch-first input, ``(1, N, H)`` for time-major input."""
        layout = "(N, T, H)" if self.batch_first else "(T, N, H)"
        check_rank(shape, (3,), layout, "LockedDropout")
        a, b, h = shape
        return (a, 1, h) if self.batch_first else (1, b, h)

    def call(self, inputs, training=None):
        shape = self.mask_shape(tuple(keras.ops.shape(inputs)))
        if not training or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return keras.ops.zeros_like(inputs)
        return masked_scale(inputs, self.bernoulli_keep(shape), 1.0 / (1.0 - self.rate))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(batch_first=self.batch_first)
        return config
