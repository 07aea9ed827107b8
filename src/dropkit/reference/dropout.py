"""Bernoulli dropout with a configurable mask geometry (the mechanism under every preset).

Hinton et al. 2012, "Improving neural networks by preventing co-adaptation of feature
detectors" (arXiv:1207.0580); Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting" (JMLR 15). Mask sharing along chosen dims is Keras' ``noise_shape`` /
flax's ``broadcast_dims``: channel dropout, locked (variational) RNN dropout, DropPath and
embedding dropout are this layer with particular ``broadcast_dims``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .base import MaskedLayer, RngLike, as_float_array, given_mask, keep_scale


class Dropout(MaskedLayer):
    r"""Dropout: zero each element with probability ``p``.

    With keep probability :math:`q = 1 - p` and a mask :math:`m_i \sim \mathrm{Bernoulli}(q)`:

    * inverted (default): train :math:`y = m \odot x / q`, eval :math:`y = x`;
    * standard (``inverted=False``, the original scheme): train :math:`y = m \odot x`,
      eval :math:`y = q\,x`.

    Both have :math:`\mathbb{E}[y_{train}] = y_{eval}`. Backward: :math:`dx = m \odot dy / q`
    (inverted) or :math:`m \odot dy` (standard); in eval :math:`dx = dy` or :math:`q\,dy`.

    ``broadcast_dims`` lists dims along which the mask is shared: the mask has the input's shape
    with those dims set to 1 (e.g. ``(2, 3)`` on ``(N, C, H, W)`` is channel dropout).

    Edge cases: ``p = 0`` keeps everything; ``p = 1`` gives zeros and zero gradients (the scale
    1/q is defined as 0 there, never ``0 * inf``). Dropped positions are set with ``where``, so
    an ``inf`` input at a dropped position gives 0, not NaN.

    Shape:
        x: any shape ``(*)``; output: same shape and dtype. ``mask`` (after a training forward):
        bool, the input shape with ``broadcast_dims`` set to 1.

    Args:
        p: drop probability in [0, 1].
        inverted: scale by 1/q at training time (True) or by q at evaluation (False).
        broadcast_dims: dims (negative allowed) along which one mask value is shared.
        rng: ``numpy.random.Generator``, int seed or None.

    Example:
        >>> layer = Dropout(0.25, rng=0)
        >>> y = layer.forward(np.ones((2, 4)))  # each entry is 0 or 1/0.75
        >>> bool(np.all((y == 0) | np.isclose(y, 4 / 3)))
        True
        >>> Dropout(1.0).forward(np.ones(3))  # p = 1: zeros, never NaN
        array([0., 0., 0.])
    """

    def __init__(
        self,
        p: float = 0.5,
        inverted: bool = True,
        *,
        broadcast_dims: tuple[int, ...] = (),
        rng: RngLike = None,
    ) -> None:
        super().__init__(p, rng)
        self.inverted = bool(inverted)
        dims = tuple(broadcast_dims)
        if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
            raise TypeError(f"{type(self).__name__}: broadcast_dims must be ints, got {dims!r}")
        self.broadcast_dims = tuple(int(d) for d in dims)

    # -- mask geometry -----------------------------------------------------------------------
    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Dims along which the mask is shared, non-negative; presets override this to check
        the input rank and derive the dims from it."""
        ndim = len(shape)
        shared = []
        for d in self.broadcast_dims:
            if not -ndim <= d < ndim:
                raise ValueError(
                    f"{type(self).__name__}: broadcast dim {d} is out of range for an input "
                    f"with {ndim} dims (shape {shape}); allowed dims are -{ndim}..{ndim - 1}"
                )
            shared.append(d % ndim)
        return tuple(sorted(set(shared)))

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the Bernoulli mask for an input of ``shape`` (shared dims set to 1)."""
        shared = self._shared_dims(tuple(shape))
        return tuple(1 if i in shared else n for i, n in enumerate(shape))

    def sample_mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """Draw a keep mask (bool, True = kept) for an input of ``shape``.

        ``U >= p`` with ``U ~ U[0, 1)`` is True with probability exactly ``1 - p``.
        """
        return self.rng.random(self.mask_shape(shape)) >= self.p

    def _given_mask(self, mask: object, shape: tuple[int, ...]) -> np.ndarray:
        return given_mask(mask, self.mask_shape(shape), type(self).__name__)

    # -- forward / backward ------------------------------------------------------------------
    def forward(
        self, x: np.ndarray, training: bool = True, *, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Apply dropout; ``mask`` (optional) replaces the random draw, for replay and tests."""
        x = as_float_array(x, type(self).__name__)
        q = 1.0 - self.p
        if not training:
            self._shared_dims(x.shape)  # the rank check applies in eval too
            scale = x.dtype.type(1.0 if self.inverted else q)
            return self._masked_forward(x, None, scale)  # inverted: returns x itself, no copy
        keep = self.sample_mask(x.shape) if mask is None else self._given_mask(mask, x.shape)
        scale = keep_scale(q, x.dtype) if self.inverted else x.dtype.type(1.0)
        return self._masked_forward(x, keep, scale)

    def extra_repr(self) -> str:
        text = f"p={self.p}"
        if not self.inverted:
            text += ", inverted=False"
        if self.broadcast_dims:
            text += f", broadcast_dims={self.broadcast_dims}"
        return text
