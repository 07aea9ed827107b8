"""Concrete dropout for Keras: a dropout rate learned through a relaxed Bernoulli mask.

Gal, Hron & Kendall 2017, "Concrete Dropout" (NeurIPS, arXiv:1705.07832). Same formulas and
regulariser as :class:`dropkit.nn.learned.ConcreteDropout` (the tests check both on the same
weights and logit); the regulariser reaches the training loss through ``add_loss``.
"""

from __future__ import annotations

import math

import keras

#: Floor of every logarithm and of the keep probability in the rescale (as the torch layer).
EPS = 1e-7


def concrete_dropout(x, p_logit, u, temperature: float):
    r""":math:`y = x \odot (1 - z) / (1 - p)`, relaxed drop mask
    :math:`z = \sigma((\log p - \log(1-p) + \log u - \log(1-u)) / t)`, :math:`p = \sigma(\ell)`;
    ``u`` uniform in [0, 1), broadcastable to ``x``. Logs of values floored at :data:`EPS`."""
    ops = keras.ops
    x, u = ops.convert_to_tensor(x), ops.convert_to_tensor(u)
    p, q = ops.sigmoid(p_logit), ops.sigmoid(-p_logit)  # q: 1 - p without cancellation
    drop_logit = ops.log(ops.maximum(p, EPS)) - ops.log(ops.maximum(q, EPS))
    noise = ops.log(ops.maximum(u, EPS)) - ops.log(ops.maximum(1.0 - u, EPS))
    keep = ops.sigmoid(-(drop_logit + noise) / temperature)  # 1 - z, precise when z ~ 1
    return ops.divide(ops.multiply(x, keep), ops.maximum(q, EPS))


def _check(value, name: str, owner: str, low: float, high: float, low_closed: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not ((value >= low if low_closed else value > low) and value < high):  # NaN fails too
        allowed = f"{'[' if low_closed else '('}{low:g}, {high:g})"
        raise ValueError(f"{owner}: {name} must be in {allowed}, got {name}={value}")
    return value


@keras.saving.register_keras_serializable(package="dropkit")
class ConcreteDropout(keras.layers.Wrapper):
    r"""Dropout with a learned rate :math:`p = \sigma(\ell)` in front of a wrapped layer.

    Train: :math:`y = f(x \odot (1 - z) / (1 - p))` with a fresh relaxed-Bernoulli drop mask
    :math:`z = \sigma((\log p - \log(1-p) + \log u - \log(1-u)) / t)`,
    :math:`u \sim U(0, 1)` per input element (:class:`SpatialConcreteDropout`: per sample and
    channel); ``f`` is the wrapped layer. Eval: :math:`y = f(x)`. Every call adds the paper's
    regulariser (:meth:`regularization`) with ``add_loss``:
    :math:`w_r \lVert W\rVert^2 / (1 - p) + d_r K (p \log p + (1-p)\log(1-p))`, ``W`` the wrapped
    layer's trainable weights except biases, ``K`` the input's feature dim (channels for the
    spatial form). Derive :math:`w_r, d_r` from (length-scale, tau, N) with
    :func:`dropkit.nn.learned.concrete_regularizers`.

    Shape: x ``(N, *, K)``; y the wrapped layer's output. ``p``: a scalar.

    Args:
        layer: the Keras layer the dropout feeds (its input is dropped).
        p_init: initial drop rate, in (0, 1).
        temperature: relaxation temperature t > 0 (default 0.1; 2/3 for the spatial form).
        weight_regularizer, dropout_regularizer: :math:`w_r, d_r \ge 0`.
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    Example:
        >>> import keras, numpy as np
        >>> layer = ConcreteDropout(keras.layers.Dense(2), p_init=0.2)
        >>> tuple(layer(np.ones((3, 4), "float32")).shape), tuple(layer.regularization().shape)
        ((3, 2), ())
    """

    default_temperature = 0.1

    def __init__(
        self,
        layer: keras.layers.Layer,
        p_init: float = 0.1,
        temperature: float | None = None,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        *,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        name = type(self).__name__
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"{name}: layer must be a keras Layer, got {type(layer).__name__}")
        super().__init__(layer, **kwargs)
        self.p_init = _check(p_init, "p_init", name, 0.0, 1.0, False)
        t = self.default_temperature if temperature is None else temperature
        self.temperature = _check(t, "temperature", name, 0.0, math.inf, False)
        self.weight_regularizer = _check(
            weight_regularizer, "weight_regularizer", name, 0.0, math.inf, True
        )
        self.dropout_regularizer = _check(
            dropout_regularizer, "dropout_regularizer", name, 0.0, math.inf, True
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_dim: int | None = None

    def _noise_shape(self, shape: tuple) -> tuple[tuple, int]:
        """(shape of u, K): one noise value per element, K = the last dim."""
        if len(shape) < 2:
            raise ValueError(f"{type(self).__name__} expects input (N, *, K), got shape {shape}")
        return shape, shape[-1]

    def build(self, input_shape) -> None:
        _, k = self._noise_shape(tuple(input_shape))
        self.input_dim = int(k)
        if not self.layer.built:
            self.layer.build(input_shape)
        logit = math.log(self.p_init) - math.log1p(-self.p_init)
        self.p_logit = self.add_weight(
            name="p_logit", shape=(), initializer=keras.initializers.Constant(logit)
        )
        self.built = True

    @property
    def p(self):
        r"""The current drop rate :math:`\sigma(\ell)` (a scalar tensor)."""
        return keras.ops.sigmoid(self.p_logit)

    def regularization(self):
        """The paper's per-layer term (see the class docstring), a scalar tensor."""
        ops = keras.ops
        p, q = ops.sigmoid(self.p_logit), ops.sigmoid(-self.p_logit)
        neg_entropy = p * ops.log(ops.maximum(p, EPS)) + q * ops.log(ops.maximum(q, EPS))
        reg = self.dropout_regularizer * self.input_dim * neg_entropy
        weights = [
            w for w in self.layer.trainable_weights if not w.name.split("/")[-1].startswith("bias")
        ]
        if weights:
            square = sum(ops.sum(ops.square(w)) for w in weights)
            reg = reg + self.weight_regularizer * square / ops.maximum(q, EPS)
        return reg

    def call(self, inputs, training=None):
        shape, k = self._noise_shape(tuple(keras.ops.shape(inputs)))
        if k != self.input_dim:
            raise ValueError(
                f"{type(self).__name__}: the input has {k} features (K) in the masked dim, but "
                f"the layer was built for {self.input_dim}; got input shape {shape}"
            )
        x = inputs
        if training:
            u = keras.random.uniform(shape, dtype=inputs.dtype, seed=self.seed_generator)
            x = concrete_dropout(
                inputs, keras.ops.cast(self.p_logit, inputs.dtype), u, self.temperature
            )
        self.add_loss(self.regularization())
        return self.layer(x)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            p_init=self.p_init,
            temperature=self.temperature,
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="dropkit")
class SpatialConcreteDropout(ConcreteDropout):
    r"""Concrete dropout of whole channels: one relaxed mask value per (sample, channel), shared
    over the spatial dims, ``K`` = the number of channels, default temperature 2/3 (the paper's
    code). Everything else is :class:`ConcreteDropout`.

    Shape: x ``(N, *spatial, C)`` (``data_format="channels_last"``) or ``(N, C, *spatial)``;
    u ``(N, 1, ..., 1, C)`` or ``(N, C, 1, ..., 1)``.
    """

    default_temperature = 2.0 / 3.0

    def __init__(self, layer, *args, data_format: str | None = None, **kwargs) -> None:
        super().__init__(layer, *args, **kwargs)
        fmt = keras.config.image_data_format() if data_format is None else data_format
        if fmt not in ("channels_last", "channels_first"):
            raise ValueError(
                "SpatialConcreteDropout: data_format must be 'channels_last' or "
                f"'channels_first', got data_format={data_format!r}"
            )
        self.data_format = fmt

    def _noise_shape(self, shape: tuple) -> tuple[tuple, int]:
        if len(shape) < 3:
            raise ValueError(
                "SpatialConcreteDropout expects input (N, *spatial, C) or (N, C, *spatial) with "
                f"at least 3 dims, got shape {shape}"
            )
        ones = (1,) * (len(shape) - 2)
        if self.data_format == "channels_last":
            return (shape[0], *ones, shape[-1]), shape[-1]
        return (shape[0], shape[1], *ones), shape[1]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(data_format=self.data_format)
        return config
