"""Argument checks shared by every functional op (the drop-rate check is the reference's own)."""

from __future__ import annotations

import torch

from dropkit.reference.base import check_p, check_positive_int

__all__ = ["check_input", "check_p", "check_positive_int", "check_rank"]


def check_input(x: object, owner: str, *, inplace: bool = False) -> torch.Tensor:
    """``x`` must be a floating-point tensor; with ``inplace`` it must be writable by autograd."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{owner}: input must be a floating-point tensor (float16, bfloat16, float32, "
            f"float64), got {x.dtype}; convert it first, e.g. x.float()"
        )
    if inplace and x.requires_grad and x.is_leaf:
        raise ValueError(
            f"{owner}(inplace=True) cannot overwrite its input: it is a leaf tensor that "
            "requires grad, and autograd needs its value; use inplace=False"
        )
    return x


def check_rank(x: torch.Tensor, expected: int | tuple[int, ...], layout: str, owner: str) -> None:
    """Strict rank check with the expected layout in the message (no silent reinterpretation)."""
    allowed = (expected,) if isinstance(expected, int) else expected
    if x.dim() not in allowed:
        dims = " or ".join(str(d) for d in allowed)
        raise ValueError(
            f"{owner} expects input of shape {layout} ({dims} dims), got {x.dim()} dims with "
            f"shape {tuple(x.shape)}; for one unbatched sample add the batch dim, e.g. x[None]"
        )


def plain_call(training: bool, p: object, seed: object, offset: object, backend: object,
               generator: object) -> bool:  # fmt: skip
    """Whether a functional call is the common one that the eager fast paths take before any
    validation: training, a float rate in (0, 1), and no ``seed``, ``offset``, ``backend`` or
    ``generator`` given (each fast path then checks its tensors)."""
    return (
        training
        and type(p) is float
        and 0.0 < p < 1.0
        and seed is None
        and offset == 0
        and backend is None
        and generator is None
    )
