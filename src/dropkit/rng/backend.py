"""Choosing the kernel that computes Philox masks for a tensor, and drawing seeds.

Backends, all following :mod:`dropkit.rng.philox` bit for bit except ``"torch"``:

* ``"numba"`` - parallel CPU kernel (the default on the CPU);
* ``"triton"`` - GPU kernel (opt-in with ``backend="triton"``: it becomes the CUDA default once
  it has passed the GPU tests on real hardware);
* ``"reference"`` - the NumPy reference (any device, via host memory; slow, for checking);
* ``"torch"`` - torch's own generator seeded from ``(seed, offset)``: reproducible, and different
  offsets give unrelated masks, but it is *not* the Philox stream: masks differ from the other
  backends and a shard does not reproduce the rows of the whole. The default on CUDA (until the
  Triton kernels are validated on GPUs) and on devices without a Philox kernel.

A missing numba falls back to ``"reference"`` with a one-time warning.
"""

from __future__ import annotations

import warnings

import torch

from .kernels import numba_available, triton_available

BACKENDS = ("reference", "numba", "triton", "torch")
#: Seeds are drawn in [0, 2^63) so that they fit a signed 64-bit tensor (the key is 64-bit).
SEED_BOUND = 2**63
_SEED_HIGH = SEED_BOUND - 1
_randint = torch.randint
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def resolve(device: torch.device, backend: str | None) -> str:
    """The backend to use for a tensor on ``device`` (``backend=None`` picks by device)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        if backend == "numba" and device.type != "cpu":
            raise ValueError(f"backend='numba' runs on CPU tensors, got a {device.type} tensor")
        if backend == "triton" and device.type != "cuda":
            raise ValueError(f"backend='triton' runs on CUDA tensors, got a {device.type} tensor")
        if backend == "numba" and not numba_available():
            raise RuntimeError("backend='numba' needs numba: pip install numba")
        if backend == "triton" and not triton_available():
            raise RuntimeError("backend='triton' needs triton: pip install triton")
        return backend
    if device.type == "cuda":
        # The Triton kernels have not yet passed the GPU tests on real hardware, so CUDA
        # defaults to torch's generator; backend="triton" opts in.
        return "torch"
    if device.type not in ("cpu", "cuda"):
        # No Philox kernel for this device (mps, xpu, ...); "meta" tensors never run a kernel.
        if device.type != "meta":
            _warn_once(
                device.type,
                f"dropkit: no Philox kernel for {device.type} tensors, so dropout uses torch's "
                "generator: masks are reproducible per seed but differ from the CPU/NumPy ones",
            )
        return "torch"
    if numba_available():
        return "numba"
    _warn_once(
        "numba",
        "dropkit: numba is not installed, so dropout uses the (slow) NumPy Philox reference; "
        "masks are unchanged (pip install numba)",
    )
    return "reference"


#: The active :class:`dropkit.rng.stream.Stream` (None: seeds come from torch's generator).
active_stream = None


def draw_seed(generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh seed as a 0-d int64 CPU tensor, from ``generator`` or torch's default generator.

    Drawing from torch's (CPU) generator makes ``torch.manual_seed`` reproduce runs, and
    activation checkpointing, which restores that generator, replays the same masks. Keeping the
    seed a tensor lets ``torch.compile`` trace the draw without a graph break. Inside a
    :func:`dropkit.rng.stream` (and no ``generator``) the seed is the stream's next key.
    """
    if generator is None:  # the common case, kept short: it runs on every dropout call
        if active_stream is not None:
            return active_stream.key(0, None)[0]
        # device="cpu" explicitly: under a torch.device("meta"/"cuda") context the seed must
        # still come from torch's CPU generator.
        return torch.randint(0, SEED_BOUND - 1, (), dtype=torch.int64, device="cpu")
    seed = torch.randint(
        0, SEED_BOUND - 1, (), dtype=torch.int64, generator=generator, device=generator.device
    )
    return seed.cpu()


def draw_key(
    generator: torch.Generator | None = None, offset: int = 0, numel: int | None = None
) -> tuple[torch.Tensor, int]:
    """``(seed, first stream position)`` of a call that draws its own seed and uses ``numel``
    mask positions from ``offset``.

    Outside a stream (or with a ``generator``): ``(draw_seed(generator), offset)``. Inside a
    :func:`dropkit.rng.stream`: the stream's next key, and ``offset`` plus the position of this
    process's first element when the stream is sharded (data-parallel mode adds the rank's
    first global row times the row size, computed from ``numel``).
    """
    if generator is None:
        if active_stream is None:
            # positional (high, size): the same draw as randint(0, high, dtype=int64) on the
            # CPU generator, without parsing keyword arguments (a third of the call)
            return _randint(_SEED_HIGH, ()), offset
        return active_stream.key(offset, numel)
    return draw_seed(generator), offset


def check_seed(seed: object, offset: object) -> tuple[torch.Tensor | None, int]:
    """Validate a user ``seed`` (int in [0, 2^63) or 0-d int tensor) and ``offset`` (int >= 0)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**62:
        raise ValueError(f"offset must be an int in [0, 2^62), got {offset!r}")
    if seed is None:
        return None, offset
    if isinstance(seed, torch.Tensor):
        if seed.dim() != 0 or seed.dtype != torch.int64:
            raise ValueError(
                f"seed tensor must be a 0-d int64 tensor, got {seed.dtype} {seed.shape}"
            )
        return seed.cpu(), offset
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_BOUND:
        raise ValueError(f"seed must be an int in [0, 2^63) or None, got {seed!r}")
    return torch.tensor(seed, dtype=torch.int64), offset
