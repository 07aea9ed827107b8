"""Channel ("spatial") dropout: one Bernoulli draw per (sample, channel).

Tompson et al. 2015, "Efficient Object Localization Using Convolutional Networks"
(arXiv:1411.4280): neighbouring activations of a feature map are strongly correlated, so
dropping single pixels barely regularises; dropping whole channels does.
"""

from __future__ import annotations

from .base import RngLike
from .dropout import Dropout


class _ChannelDropout(Dropout):
    """Channels-first channel dropout over ``spatial_ndim`` trailing dims (strict rank)."""

    spatial_ndim: int
    layout: str

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__(p, inverted=True, rng=rng)

    def _shared_dims(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        expected = 2 + self.spatial_ndim
        if len(shape) != expected:
            raise ValueError(
                f"{type(self).__name__} expects input of shape {self.layout} ({expected} dims), "
                f"got {len(shape)} dims with shape {tuple(shape)}; for one unbatched sample "
                "add the batch dim first, e.g. x[None]"
            )
        return tuple(range(2, expected))


class Dropout1d(_ChannelDropout):
    r"""Channel dropout for sequences: input ``(N, C, L)``, mask ``(N, C, 1)``.

    Train :math:`y_{ncl} = m_{nc} x_{ncl} / q`, :math:`m_{nc} \sim \mathrm{Bernoulli}(1-p)`;
    eval :math:`y = x`; backward :math:`dx_{ncl} = m_{nc}\,dy_{ncl} / q` (Tompson et al. 2015).
    """

    spatial_ndim = 1
    layout = "(N, C, L)"


class Dropout2d(_ChannelDropout):
    r"""Channel dropout for images: input ``(N, C, H, W)``, mask ``(N, C, 1, 1)``.

    Train :math:`y_{nchw} = m_{nc} x_{nchw} / q`; eval :math:`y = x` (Tompson et al. 2015).
    """

    spatial_ndim = 2
    layout = "(N, C, H, W)"


class Dropout3d(_ChannelDropout):
    r"""Channel dropout for volumes: input ``(N, C, D, H, W)``, mask ``(N, C, 1, 1, 1)``.

    Train :math:`y_{ncdhw} = m_{nc} x_{ncdhw} / q`; eval :math:`y = x` (Tompson et al. 2015).
    """

    spatial_ndim = 3
    layout = "(N, C, D, H, W)"
