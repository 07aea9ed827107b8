"""What every dropkit Keras layer shares: the validated ``rate``, the seed and its generator.

The ``rate`` check is the one place that validates drop rates for the Keras layers; it runs at
construction and on every assignment (schedules mutate ``rate`` during training), and its
message names the argument, the allowed range and the value received.
"""

from __future__ import annotations

import numbers

import keras


def check_rate(rate: object, owner: str, *, allow_one: bool = True) -> float:
    """``rate`` as a float in [0, 1] (``[0, 1)`` without ``allow_one``), else a clear error."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{owner}: rate must be a real number in [0, 1], got {type(rate).__name__}")
    value = float(rate)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):  # written so that NaN fails too
        allowed = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{owner}: rate must be in {allowed}, got rate={rate}")
    return value


def check_rank(shape: tuple, allowed: tuple[int, ...], layout: str, owner: str) -> None:
    """Strict rank check: no silent reinterpretation of an input's layout."""
    if len(shape) not in allowed:
        dims = " or ".join(str(d) for d in allowed)
        raise ValueError(
            f"{owner} expects input of shape {layout} ({dims} dims), got {len(shape)} dims with "
            f"shape {tuple(shape)}; for one unbatched sample add the batch dim first"
        )


def masked_scale(x, keep, scale: float):
    """``where(keep, x * scale, 0)``: dropped positions are exact zeros even for inf inputs."""
    scaled = x * keras.ops.cast(scale, x.dtype)
    return keras.ops.where(keep, scaled, keras.ops.zeros_like(x))


class RateLayer(keras.layers.Layer):
    """Base class: ``rate`` (validated on every assignment), ``seed`` and ``seed_generator``.

    Masks are drawn from ``keras.random`` with ``self.seed_generator`` (a
    ``keras.random.SeedGenerator(seed)``), so a fixed ``seed`` reproduces the sequence of masks
    on one backend; the streams differ between backends.
    """

    def __init__(self, rate: float, *, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rate = rate
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"{type(self).__name__}: seed must be an int or None, got {seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    allow_one = True

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = check_rate(value, type(self).__name__, allow_one=self.allow_one)

    def bernoulli_keep(self, shape: tuple[int, ...]):
        """Bool keep mask of ``shape``: ``U < 1 - rate``, True with probability exactly q."""
        u = keras.random.uniform(shape, seed=self.seed_generator)
        return keras.ops.less(u, 1.0 - self.rate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
