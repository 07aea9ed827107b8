r"""Standout for Keras: a dense layer whose units are kept with an input-dependent probability.

Ba & Frey 2013, "Adaptive dropout for training deep neural networks" (NIPS), with the belief
network tied to the layer's weights (the paper's :math:`\pi = \sigma(\alpha W x + \beta)` form):
the same formulas as :class:`dropkit.nn.learned.Standout` and the NumPy twin
:class:`dropkit.reference.standout.Standout` (the tests check both on the same weights).
"""

from __future__ import annotations

import numbers

import keras
from dropkit.reference.standout import check_gain  # the alpha/beta check of the twins


@keras.saving.register_keras_serializable(package="dropkit")
class Standout(keras.layers.Layer):
    r"""Dense layer and activation whose units are dropped with input-dependent probability.

    :math:`a = x W + b`, keep probability :math:`\pi = \sigma(\alpha a + \beta)` (the belief
    network shares ``kernel`` and ``bias``); training :math:`y = m \odot f(a)` with
    :math:`m \sim \mathrm{Bernoulli}(\pi)` per unit and sample; evaluation
    :math:`y = \pi \odot f(a) = \mathbb E_m[y_\text{train}]` (the paper's rule: no :math:`1/\pi`
    rescaling in training). In training the mask is a sample, so no gradient flows into
    :math:`\pi` (:math:`\partial y / \partial a = m \odot f'(a)`); in evaluation both factors are
    differentiated. The keep probabilities depend on the current input only.

    Shape: input ``(N, *, in_features)``; output (and ``keep_mask``) ``(N, *, units)``.

    Args:
        units: output size.
        alpha, beta: scale and shift of the belief network's pre-activation (finite reals).
        use_bias: learn an additive bias (shared by the belief network).
        activation: :math:`f`, a Keras activation name or callable (default ``"relu"``).
        kernel_initializer, bias_initializer: as ``keras.layers.Dense``.
        seed: int seed of the layer's ``keras.random.SeedGenerator``, or None.

    ``call(inputs, training=None, keep_mask=None)``: ``keep_mask`` (bool or 0/1, the output's
    shape; training only) replaces the random draw. :meth:`keep_probability` gives :math:`\pi`.

    Example:
        >>> import keras, numpy as np
        >>> layer = Standout(3, alpha=1.0, beta=0.5, seed=0)
        >>> x = np.ones((2, 4), "float32")
        >>> tuple(layer(x, training=True).shape), tuple(layer.keep_probability(x).shape)
        ((2, 3), (2, 3))
    """

    def __init__(
        self,
        units: int,
        alpha: float = 1.0,
        beta: float = 0.0,
        use_bias: bool = True,
        activation="relu",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        *,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ValueError(f"Standout: units must be a positive int, got units={units!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"Standout: seed must be an int or None, got {seed!r}")
        self.units = int(units)
        self.alpha = check_gain(alpha, "alpha")
        self.beta = check_gain(beta, "beta")
        self.use_bias = bool(use_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape) -> None:
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"Standout expects input of shape (N, *, in_features) with a known last dim, "
                f"got shape {tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.units), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def _pre_activation(self, inputs):
        pre = keras.ops.matmul(inputs, self.kernel)  # a, (N, *, units)
        return pre if self.bias is None else keras.ops.add(pre, self.bias)

    def keep_probability(self, inputs):
        r""":math:`\pi = \sigma(\alpha (x W + b) + \beta)`, shaped like the output."""
        return keras.ops.sigmoid(self.alpha * self._pre_activation(inputs) + self.beta)

    def call(self, inputs, training=None, keep_mask=None):
        ops = keras.ops
        pre = self._pre_activation(inputs)
        hidden = self.activation(pre)
        if not training:
            if keep_mask is not None:
                raise ValueError("Standout: keep_mask is only used in training (training=True)")
            return ops.sigmoid(self.alpha * pre + self.beta) * hidden
        # The mask is a sample: the Bernoulli draw is not differentiated, so π needs no graph.
        keep_prob = ops.sigmoid(self.alpha * ops.stop_gradient(pre) + self.beta)
        if keep_mask is None:
            shape = ops.shape(pre)
            u = keras.random.uniform(shape, dtype=keep_prob.dtype, seed=self.seed_generator)
            keep = ops.less(u, keep_prob)  # True with probability π
        else:
            if tuple(ops.shape(keep_mask)) != tuple(ops.shape(pre)):
                raise ValueError(
                    f"Standout: keep_mask has shape {tuple(ops.shape(keep_mask))}, expected the "
                    f"output shape {tuple(ops.shape(pre))}"
                )
            keep = ops.cast(keep_mask, "bool")
        # where, not a product, so that inf activations at dropped units give 0, not NaN.
        return ops.where(keep, hidden, ops.zeros_like(hidden))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            alpha=self.alpha,
            beta=self.beta,
            use_bias=self.use_bias,
            activation=keras.activations.serialize(self.activation),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            seed=self.seed,
        )
        return config
