"""DropPath / stochastic depth for Keras (Huang et al. 2016, arXiv:1603.09382).

The "drop-path" name is from FractalNet (Larsson et al. 2017, arXiv:1605.07648). Same semantics
as :class:`dropkit.nn.DropPath`; Keras ships no such layer.
"""

from __future__ import annotations

import keras

from ._base import RateLayer, masked_scale


@keras.saving.register_keras_serializable(package="dropkit")
class DropPath(RateLayer):
    r"""Drop a residual branch per sample (``mode="row"``) or for the whole batch (``"batch"``).

    Train :math:`y = b\,x / q` (``scale_by_keep=True``) or :math:`y = b\,x`, with
    :math:`b \sim \mathrm{Bernoulli}(q)`, :math:`q = 1 - \text{rate}`, of shape
    ``(N, 1, ..., 1)`` (row) or ``(1, ..., 1)`` (batch); eval :math:`y = x`. Use it on the
    branch: ``x + DropPath(0.1)(f(x))``. With ``scale_by_keep=False`` the original paper's eval
    rule is :math:`x + q f(x)`; dropkit leaves eval as the identity either way. ``rate = 1``
    gives zeros.

    Shape: ``(N, *)``; output the same.

    Args:
        rate: drop probability in [0, 1].
        mode: ``"row"`` (one draw per sample) or ``"batch"`` (one draw for the batch).
        scale_by_keep: divide kept samples by q.
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
        >>> import keras, numpy as np
        >>> layer = DropPath(0.5, seed=0)
        >>> y = keras.ops.convert_to_numpy(layer(np.ones((4, 3), "float32"), training=True))
        >>> sorted(set(y.ravel().tolist())) in ([0.0], [2.0], [0.0, 2.0])
        True
    """

    def __init__(
        self,
        rate: float = 0.1,
        mode: str = "row",
        scale_by_keep: bool = True,
        *,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(rate, seed=seed, **kwargs)
        if mode not in ("row", "batch"):
            raise ValueError(f"DropPath: mode must be 'row' or 'batch', got mode={mode!r}")
        self.mode = mode
        self.scale_by_keep = bool(scale_by_keep)

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, 1, ..., 1)`` for ``"row"``, ``(1, ..., 1)`` for ``"batch"``."""
        if len(shape) < 1:
            raise ValueError("DropPath expects input of shape (N, *), got a 0-d input")
        first = shape[0] if self.mode == "row" else 1
        return (first,) + (1,) * (len(shape) - 1)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        if self.rate == 1.0:
            return keras.ops.zeros_like(inputs)
        keep = self.bernoulli_keep(self.mask_shape(tuple(keras.ops.shape(inputs))))
        scale = 1.0 / (1.0 - self.rate) if self.scale_by_keep else 1.0
        return masked_scale(inputs, keep, scale)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(mode=self.mode, scale_by_keep=self.scale_by_keep)
        return config
