"""The contract every reference layer follows, and the argument checks they share.

A reference layer is a tiny object with two methods:

* ``forward(x, training=True)`` computes the output and keeps what backward needs;
* ``backward(dout)`` returns dL/dx and, for layers with parameters, fills ``self.grads``
  (one array per entry of ``self.params``, same names and shapes).

Randomness comes from ``self.rng`` (a :class:`numpy.random.Generator`), so a fixed seed gives
fixed masks, and :func:`dropkit.reference.gradcheck` can replay the same masks by restoring the
generator's state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np

RngLike = np.random.Generator | int | None


def make_rng(rng: RngLike) -> np.random.Generator:
    """Turn ``rng`` into a :class:`numpy.random.Generator`.

    A Generator is used as it is (shared, not copied), an int seeds a new PCG64 generator, and
    ``None`` draws fresh OS entropy.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}"
    )


def check_p(p: object, owner: str, *, allow_one: bool = True) -> float:
    """Validate a drop probability and return it as a Python float.

    ``p`` must be a real number in ``[0, 1]`` (``[0, 1)`` when ``allow_one`` is false, for the
    Gaussian variants whose noise variance p/(1-p) is infinite at p = 1).
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{owner}: p must be a real number in [0, 1], got {type(p).__name__}")
    p = float(p)
    upper_ok = p <= 1.0 if allow_one else p < 1.0
    if not (p >= 0.0 and upper_ok):  # written so that NaN fails too
        allowed = "[0, 1]" if allow_one else "[0, 1) (p = 1 would make the noise variance infinite)"
        raise ValueError(f"{owner}: dropout probability p must be in {allowed}, got p={p}")
    return p


class DropRate:
    """Descriptor for a drop probability ``p``, validated on every assignment.

    Schedules and user code change ``p`` during training, so checking it only in the
    constructor would let a bad value through; this checks it wherever it is set.
    """

    def __init__(self, *, allow_one: bool = True) -> None:
        self.allow_one = allow_one

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, obj: object, objtype: type | None = None):
        return self if obj is None else getattr(obj, self.attr)

    def __set__(self, obj: object, value: object) -> None:
        checked = check_p(value, type(obj).__name__, allow_one=self.allow_one)
        # A plain int/float is kept as given (so ``repr`` prints ``p=0`` as torch's layers do);
        # other real types (numpy scalars, fractions) become the validated float.
        setattr(obj, self.attr, value if type(value) in (int, float) else checked)


def check_positive_int(value: object, name: str, owner: str) -> int:
    """Validate an integer hyper-parameter that must be at least 1 (sizes, block sizes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {name}={value!r}")
    return int(value)


def check_int_pair(value: object, name: str, owner: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (kernel size, stride, ...), each at least ``minimum``, as a pair."""
    pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
    ints = all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair)
    if len(pair) != 2 or not ints or min(pair) < minimum:
        raise ValueError(
            f"{owner}: {name} must be an integer >= {minimum} or a pair of them, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def check_threshold(value: object, owner: str) -> float:
    """A sparse-VD pruning threshold: a finite real log α (TypeError / ValueError otherwise)."""
    message = f"{owner}: threshold (a log α) must be a finite real number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{message}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{message}, got {value!r}")
    return float(value)


def check_conv2d_args(
    owner: str,
    in_channels: object,
    out_channels: object,
    kernel_size: object,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
) -> tuple[int, int, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int], int]:
    """The checked arguments of a 2-d convolution, as ``(in_channels, out_channels, kernel_size,
    stride, padding, dilation, groups)`` with the four geometry arguments as int pairs; groups
    must divide both channel counts."""
    in_channels = check_positive_int(in_channels, "in_channels", owner)
    out_channels = check_positive_int(out_channels, "out_channels", owner)
    groups = check_positive_int(groups, "groups", owner)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{owner}: groups must divide in_channels and out_channels, got groups={groups} "
            f"with in_channels={in_channels}, out_channels={out_channels}"
        )
    return (
        in_channels,
        out_channels,
        check_int_pair(kernel_size, "kernel_size", owner, 1),
        check_int_pair(stride, "stride", owner, 1),
        check_int_pair(padding, "padding", owner, 0),
        check_int_pair(dilation, "dilation", owner, 1),
        groups,
    )


def as_float_array(x: object, owner: str, name: str = "x") -> np.ndarray:
    """Return ``x`` as a floating-point ndarray, refusing integer, bool and complex data.

    Dropout of integer data would silently truncate the 1/(1-p) scale, so it is an error.
    """
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{owner}: {name} must be a floating-point array (float16, float32 or float64), "
            f"got dtype {arr.dtype}; convert it first, e.g. {name}.astype(np.float64)"
        )
    return arr


def given_mask(mask: object, expected: tuple[int, ...], owner: str) -> np.ndarray:
    """Validate a caller-supplied keep mask (0/1 or bool, exact shape) and return it as bool."""
    mask = np.asarray(mask)
    if mask.shape != tuple(expected):
        raise ValueError(f"{owner}: mask has shape {mask.shape}, expected {tuple(expected)}")
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{owner}: mask must hold only 0/1 or True/False")
    return mask.astype(bool)


def keep_scale(q: float, dtype: np.dtype) -> np.floating:
    """The inverted-dropout scale 1/q in ``dtype``, defined as 0 when q = 0 (p = 1).

    Defining the scale as 0 at p = 1 is what makes p = 1 give zeros and zero gradients
    instead of 0 * inf = NaN (the convention torch, timm, flax and Keras converged on).
    """
    return np.dtype(dtype).type(1.0 / q if q > 0.0 else 0.0)


def masked_scale(x: np.ndarray, keep: np.ndarray | None, scale) -> np.ndarray:
    """``where(keep, x * scale, 0)``, the one formula behind every mask-and-rescale layer.

    ``keep=None`` means everything is kept (then ``scale == 1`` returns ``x`` itself). A zero
    scale (p = 1) gives exact zeros, and ``where`` discards whatever ``x * scale`` was at dropped
    positions, so ``inf`` inputs give 0 there rather than NaN (without a warning). ``scale`` may
    be an array that broadcasts against ``x`` (DropBlock's per-sample scale).
    """
    if np.ndim(scale) == 0 and scale == 0:
        return np.zeros_like(x)
    if keep is None:
        return x if np.ndim(scale) == 0 and scale == 1 else x * scale
    with np.errstate(invalid="ignore"):  # inf * 0 at dropped positions is discarded by where
        return np.where(keep, x * scale, x.dtype.type(0))


class Layer:
    """Base class: parameter bookkeeping and the guards shared by every reference layer.

    Subclasses implement ``forward`` and ``backward``; they call :meth:`_save` at the end of
    forward and :meth:`_saved` at the start of backward.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache: dict | None = None

    # -- composition -------------------------------------------------------------------------
    def children(self) -> list[Layer]:
        """Direct sub-layers (empty for a leaf layer)."""
        return []

    def modules(self) -> Iterator[Layer]:
        """This layer and all its descendants, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x, training: bool = True):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - interface
        raise NotImplementedError

    # -- forward/backward bookkeeping --------------------------------------------------------
    def _save(self, out_shape: tuple[int, ...], **saved) -> None:
        self._cache = {"out_shape": tuple(out_shape), **saved}

    def _saved(self, dout: object) -> tuple[dict, np.ndarray]:
        """Check that forward ran and that ``dout`` matches its output; return (cache, dout)."""
        name = type(self).__name__
        if self._cache is None:
            raise RuntimeError(
                f"{name}.backward() called before forward(): run forward(x) first, "
                "backward uses what forward saved"
            )
        dout = as_float_array(dout, name, "dout")
        expected = self._cache["out_shape"]
        if dout.shape != expected:
            raise ValueError(
                f"{name}.backward(): dout has shape {dout.shape}, "
                f"expected the output shape {expected}"
            )
        return self._cache, dout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


class MaskedLayer(Layer):
    """A layer computing ``y = where(keep, x * scale, 0)``: subclasses draw ``keep`` and choose
    ``scale`` in ``forward`` and finish with :meth:`_masked_forward`; ``backward`` is shared,
    ``dx = where(keep, dout * scale, 0)``."""

    p = DropRate()

    def __init__(self, p: float, rng: RngLike) -> None:
        super().__init__()
        self.p = p
        self.rng = make_rng(rng)
        #: The last keep mask drawn in training (True = kept); None before the first.
        self.mask: np.ndarray | None = None

    def _masked_forward(self, x: np.ndarray, keep: np.ndarray | None, scale) -> np.ndarray:
        out = masked_scale(x, keep, scale)
        if keep is not None:
            self.mask = keep
        self._save(out.shape, keep=keep, scale=scale)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx = where(keep, dout * scale, 0), with the mask and scale of the forward pass."""
        cache, dout = self._saved(dout)
        return masked_scale(dout, cache["keep"], cache["scale"])
