"""StochasticDepth: a residual branch with DropPath that computes the branch on kept rows only.

Huang et al. 2016 (arXiv:1603.09382); the subset form is DINOv2's
``drop_add_residual_stochastic_depth`` (Oquab et al. 2023, arXiv:2304.07193).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from dropkit.functional.drop_path_residual import MODES, drop_path_residual

from .base import DropoutModule

_STATS_BUFFERS = ("running_mean", "running_var")


def cross_sample_modules(branch: nn.Module) -> list[str]:
    """Submodules of ``branch`` whose training forward couples the samples of a batch.

    BatchNorm / SyncBatchNorm in train mode (or without running statistics, when they always
    normalise with batch statistics), InstanceNorm with ``track_running_stats`` in train mode
    (its running statistics average the batch), and any other module in train mode with a
    ``running_mean`` / ``running_var`` buffer. Entries read ``"name (ClassName)"``.
    """
    found = []
    for name, m in branch.named_modules():
        if isinstance(m, _BatchNorm):
            coupled = m.training or not m.track_running_stats
        elif isinstance(m, _InstanceNorm):
            coupled = m.training and m.track_running_stats
        else:
            buffers = (b for b, _ in m.named_buffers(recurse=False))
            coupled = m.training and any(b in _STATS_BUFFERS for b in buffers)
        if coupled:
            found.append(f"{name or '<branch>'} ({type(m).__name__})")
    return found


class StochasticDepth(DropoutModule):
    r"""``x + drop_path(branch(x))`` that runs ``branch`` only on the samples it keeps.

    Train: :math:`y_n = x_n + s\,f(x_K)_n` for kept rows :math:`n \in K`, :math:`y_n = x_n`
    for the others; eval :math:`y = x + f(x)`. Modes (see
    :func:`dropkit.functional.drop_path_residual`): ``"row"`` (each sample kept with
    probability :math:`q = 1 - p`, :math:`s = 1/q`: the DropPath distribution, and its exact
    masks), ``"fixed"`` (exactly :math:`\max(1, \mathrm{round}(Nq))` samples, :math:`s = N/k`,
    static shapes) and ``"batch"`` (the whole branch skipped with probability ``p``).

    The branch must treat samples independently. In training, a branch holding BatchNorm /
    SyncBatchNorm, InstanceNorm with running statistics or another module with running
    statistics in train mode raises ``ValueError`` (:func:`cross_sample_modules`): on a subset
    of the batch its statistics, and so the output, would differ from the full-batch branch.
    LayerNorm, GroupNorm, RMSNorm, Linear, convolutions, attention within a sample and
    elementwise activations are per-sample.

    MC dropout: :func:`dropkit.mc.enable` sets ``training`` on this module only, so the branch
    runs in eval; this module then samples per row (``"fixed"`` acts as ``"row"``), so the
    copies of a replicated batch are independent samples.

    Shape: x ``(N, *)``; extra tensor arguments ``(N, ...)`` (sliced with x); output ``(N, *)``.

    Args:
        branch: the residual branch (an ``nn.Module``), output shaped like its input.
        p: drop probability in [0, 1].
        mode: ``"row"``, ``"fixed"`` or ``"batch"``.
        scale_by_keep: scale the kept branch outputs by ``s`` (True) or not.

    Example:
        >>> import torch
        >>> block = StochasticDepth(torch.nn.Linear(4, 4), p=0.5)
        >>> block(torch.randn(8, 4)).shape
        torch.Size([8, 4])
    """

    def __init__(
        self, branch: nn.Module, p: float = 0.1, mode: str = "row", scale_by_keep: bool = True
    ) -> None:
        super().__init__(p, inplace=False)
        if not isinstance(branch, nn.Module):
            raise TypeError(
                f"StochasticDepth: branch must be an nn.Module, got {type(branch).__name__}; "
                "use dropkit.functional.drop_path_residual for a plain function"
            )
        if mode not in MODES:
            raise ValueError(f"StochasticDepth: mode must be one of {MODES}, got {mode!r}")
        self.branch = branch
        self.mode = mode
        self.scale_by_keep = bool(scale_by_keep)

    def forward(self, x: torch.Tensor, *args, shared: dict | None = None, **kwargs) -> torch.Tensor:
        """``x + drop(branch(x, *args, **kwargs, **shared))``; ``args``/``kwargs`` tensors are
        sliced along dim 0 with ``x``, ``shared`` keyword arguments are passed unsliced."""
        mode = self.mode
        if self.training and self.p > 0 and mode != "batch":
            if not self.branch.training:  # MC dropout: independent rows of a replicated batch
                mode = "row"
            else:
                coupled = cross_sample_modules(self.branch)
                if coupled:
                    raise ValueError(
                        "StochasticDepth: the branch couples the samples of a batch in "
                        f"training ({', '.join(coupled)}), so computing it on the kept rows "
                        "only would change its output; use per-sample layers (LayerNorm, "
                        "GroupNorm) in the branch, or DropPath on the full branch instead"
                    )
        return drop_path_residual(
            x, self.branch, self.p, self.training, mode=mode,
            scale_by_keep=self.scale_by_keep, args=args, kwargs=kwargs, shared=shared,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}"
