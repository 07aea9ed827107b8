"""How each dropout module draws its masks during :func:`dropkit.mc.predict`.

While ``predict`` runs, the forward of every sampled dropout module is wrapped (an instance
attribute that shadows the class's ``forward``; removed afterwards). The wrapper knows which
MC samples the rows of the current call belong to: a batched call holds ``k`` copies of the
batch, sample-major (rows ``j*N .. (j+1)*N - 1`` are MC sample ``ts[j]``).

* Default: modules whose one mask is shared by the whole batch (``DropConnectLinear``,
  ``WeightDrop``, ``EmbeddingDropout``, ``DropPath(mode="batch")``, torchvision
  ``StochasticDepth(mode="batch")``, ``Dropout`` sharing dim 0) are called once per copy, so
  the ``k`` copies get independent masks exactly as ``k`` separate forwards would.
* ``consistent=True``: every dropkit module draws, for MC sample ``t``, the mask of
  :func:`consistent_forward` from :func:`sample_seed` (shared by every row of that sample), so
  the masks depend only on ``(seed, k, t)`` and not on the batch, the strategy or the call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from dropkit import functional as F
from dropkit import nn as dkn
from dropkit.nn.learned.base import LearnedDropout
from dropkit.reference.alpha import ALPHA_PRIME, alpha_dropout_affine

from .modes import is_dropkit_dropout

#: Stream positions reserved for one call of a module within one forward (the c-th call of a
#: module reused inside a forward starts its mask at position ``c * CALL_STRIDE``).
CALL_STRIDE = 2**40
#: Most MC samples per module in consistent mode (the t field of the seed derivation).
MAX_SAMPLES = 2**20
_CUDNN_CHUNK_WARNING = r"RNN module weights are not part of single contiguous chunk of memory"


def sample_seed(seed: int, k: int, t: int) -> int:
    """The mask seed of the ``k``-th dropkit dropout module for MC sample ``t``.

    Two Philox words at stream positions ``2 (k 2^20 + t)`` and ``2 (k 2^20 + t) + 1`` of key
    ``seed``, ``(w0 mod 2^31) 2^32 + w1``: a 63-bit seed, a pure function of
    ``(seed, k, t)``, different for every ``t < 2^20`` of every module.
    """
    w0, w1 = F.random_words(2, seed=seed, offset=2 * (k * MAX_SAMPLES + t)).tolist()
    return ((w0 & 0x7FFFFFFF) << 32) | w1


def _check_rank(x: torch.Tensor, rank: int, name: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"{name} expects a {rank}-D input, got shape {tuple(x.shape)}")


def _alpha(x: torch.Tensor, p: float, dims: tuple[int, ...], rng: dict) -> torch.Tensor:
    shape = tuple(1 if d in dims else n for d, n in enumerate(x.shape))
    keep = F.bernoulli_mask(shape, p, device=x.device, **rng)
    if p >= 1.0:
        return torch.zeros_like(x)
    a, b = alpha_dropout_affine(p)
    return torch.where(keep, x, ALPHA_PRIME) * a + b


def _weight_drop(m: dkn.WeightDrop, args, kwargs, seed: int, offset: int):
    dropped = {}
    for i, name in enumerate(m.weights):
        rng = dict(seed=seed, offset=offset + i * 2**36)
        dropped[name] = F.dropout(m._raw(name), m.p, True, **rng)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _CUDNN_CHUNK_WARNING, UserWarning)
        return functional_call(m.module, dropped, args, kwargs)


def consistent_forward(m: nn.Module, args: tuple, kwargs: dict, seed: int, offset: int):
    """Module ``m``'s training forward with a mask of stream key ``seed`` (positions from
    ``offset``) that is shared along dim 0: one mask for every row of the batch.

    Per module: ``Dropout`` shares dim 0 besides its ``broadcast_dims``; channel and alpha
    dropout use a ``(1, C, 1, ...)`` (feature) mask; ``GaussianDropout`` noise ``(1, *)``;
    ``DropPath`` and ``StochasticDepth`` one draw (``mode="batch"``); DropBlock one block mask
    ``(1, C, *spatial)``; ``LockedDropout`` a ``(1, 1, H)`` mask; ``EmbeddingDropout``,
    ``DropConnectLinear`` and ``WeightDrop`` already share one mask per call.
    """
    x, p, rng = args[0], m.p, dict(seed=seed, offset=offset)
    kind = type(m)
    if kind is dkn.Dropout:
        dims = (0, *m.broadcast_dims)
        return F.dropout(x, p, True, inverted=m.inverted, broadcast_dims=dims, **rng)
    spatial = {dkn.Dropout1d: 1, dkn.Dropout2d: 2, dkn.Dropout3d: 3}.get(kind)
    if spatial is not None:
        _check_rank(x, 2 + spatial, kind.__name__)
        return F.dropout(x, p, True, broadcast_dims=(0, *range(2, 2 + spatial)), **rng)
    if kind is dkn.AlphaDropout:
        return _alpha(x, p, (0,), rng)
    if kind is dkn.FeatureAlphaDropout:
        return _alpha(x, p, (0, *range(2, x.dim())), rng)
    if kind is dkn.GaussianDropout:
        noise = F.gaussian_noise((1, *x.shape[1:]), p, dtype=x.dtype, device=x.device, **rng)
        return x * noise
    if kind is dkn.DropPath:
        return F.drop_path(x, p, True, mode="batch", scale_by_keep=m.scale_by_keep, **rng)
    if kind is dkn.StochasticDepth:
        # One draw per call: the branch runs on the whole batch or is skipped for it.
        extra = dict(kwargs)
        shared = extra.pop("shared", None)
        return F.drop_path_residual(
            x, m.branch, p, True, mode="batch", scale_by_keep=m.scale_by_keep,
            args=args[1:], kwargs=extra, shared=shared, **rng,
        )  # fmt: skip
    if kind in (dkn.DropBlock2d, dkn.DropBlock3d):
        op = F.drop_block2d if kind is dkn.DropBlock2d else F.drop_block3d
        ones = torch.ones((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        kept = op(ones, p, True, block_size=m.block_size, shared_channels=m.shared_channels, **rng)
        return x * kept
    if kind is dkn.LockedDropout:
        _check_rank(x, 3, "LockedDropout")
        return F.dropout(x, p, True, broadcast_dims=(0, 1), **rng)
    if kind is dkn.EmbeddingDropout:
        emb = m.embedding
        if emb is None:
            return F.embedding_dropout(x, p, True, **rng)
        return F.embedded_dropout(
            x, emb.weight, p, True, padding_idx=emb.padding_idx, max_norm=emb.max_norm,
            norm_type=emb.norm_type, scale_grad_by_freq=emb.scale_grad_by_freq,
            sparse=emb.sparse, **rng,
        )  # fmt: skip
    if kind is dkn.DropConnectLinear:
        return F.dropconnect_linear(x, m.weight, m.bias, p, True, **rng)
    if kind is dkn.WeightDrop:
        return _weight_drop(m, args, kwargs, seed, offset)
    raise ValueError(unsupported_message(m))


_SUPPORTED = (
    dkn.Dropout, dkn.Dropout1d, dkn.Dropout2d, dkn.Dropout3d, dkn.AlphaDropout,
    dkn.FeatureAlphaDropout, dkn.GaussianDropout, dkn.DropPath, dkn.StochasticDepth,
    dkn.DropBlock2d, dkn.DropBlock3d, dkn.LockedDropout, dkn.EmbeddingDropout,
    dkn.DropConnectLinear, dkn.WeightDrop,
)  # fmt: skip


def unsupported_message(m: nn.Module, name: str = "") -> str:
    """Why ``consistent=True`` cannot control ``m``'s masks, and the fix."""
    where = f"{name!r} ({type(m).__qualname__})" if name else type(m).__qualname__
    if isinstance(m, LearnedDropout):
        return (
            f"consistent=True: {where} learns its rate and draws its noise from torch's "
            "generator, not from the counter-based stream; use consistent=False for it"
        )
    if is_dropkit_dropout(m):
        return (
            f"consistent=True: {where} is a subclass of a dropkit module with its own forward; "
            f"consistent masks support exactly {', '.join(c.__name__ for c in _SUPPORTED)}"
        )
    return (
        f"consistent=True needs dropkit's counter-based masks, but {where} is not a dropkit "
        "module; call `model, _ = dropkit.convert(model)` first (it replaces torch, timm and "
        "torchvision dropout modules), or use consistent=False"
    )


def consistent_supported(m: nn.Module) -> bool:
    return type(m) in _SUPPORTED


def splittable(m: nn.Module) -> bool:
    """False for modules whose input has no batch dim (``EmbeddingDropout`` on a weight)."""
    return not (isinstance(m, dkn.EmbeddingDropout) and m.embedding is None)


def shares_batch_mask(m: nn.Module, x: object) -> bool:
    """Whether one forward of ``m`` draws one mask for the whole batch (dim 0)."""
    if isinstance(m, dkn.DropConnectLinear | dkn.WeightDrop | dkn.EmbeddingDropout):
        return True
    if isinstance(m, dkn.DropPath | dkn.StochasticDepth) or type(m).__name__ == "StochasticDepth":
        return getattr(m, "mode", "row") == "batch"
    if isinstance(m, dkn.Dropout) and isinstance(x, torch.Tensor) and x.dim() > 0:
        return any(d % x.dim() == 0 for d in m.broadcast_dims)
    return False


def _cat(outputs: list):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs)
    if isinstance(first, tuple | list):
        return type(first)(_cat(list(parts)) for parts in zip(*outputs, strict=True))
    raise TypeError(f"dropkit.mc: cannot concatenate {type(first).__name__} outputs")


def _chunks(x: torch.Tensor, k: int, name: str) -> tuple[torch.Tensor, ...]:
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] % k:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"dropkit.mc: {name} got input {shape}, which does not hold {k} copies of the batch "
            "along dim 0; batched and prefix strategies need the batch in dim 0 of every "
            "dropout input; use strategy='loop'"
        )
    return x.tensor_split(k)


class Sampler:
    """Installs the per-module forward wrappers for one ``predict`` call (a context manager).

    ``ts`` is the list of MC sample indices of the current model call (set with
    :meth:`begin`). ``modules`` are ``(name, module)`` pairs; in consistent mode ``k`` is the
    module's index among *all* dropkit dropout modules of the model in ``named_modules()``
    order, so changing one module's rate never changes another module's masks.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], *, consistent: bool, seed: int):
        self.consistent = consistent
        self.seed = seed
        self.ts: list[int] = [0]
        self._calls: dict[int, int] = {}
        self._seeds: dict[tuple[int, int], int] = {}
        index = [m for _, m in model.named_modules() if is_dropkit_dropout(m)]
        self.modules = []
        for name in names:
            module = model.get_submodule(name)
            k = next((i for i, m in enumerate(index) if m is module), -1)
            self.modules.append((name, module, k))
        self._saved: list[tuple[nn.Module, Callable | None]] = []

    def begin(self, ts: Sequence[int]) -> None:
        """A new model call whose rows are the copies for MC samples ``ts`` (sample-major)."""
        self.ts = list(ts)
        self._calls.clear()

    def _seed(self, k: int, t: int) -> int:
        if (k, t) not in self._seeds:
            self._seeds[k, t] = sample_seed(self.seed, k, t)
        return self._seeds[k, t]

    def _wrapper(self, name: str, module: nn.Module, k: int, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            n = len(self.ts)
            if self.consistent:
                call = self._calls.get(k, 0)
                self._calls[k] = call + 1
                offset = call * CALL_STRIDE
                if n == 1:
                    return consistent_forward(
                        module, args, kwargs, self._seed(k, self.ts[0]), offset
                    )
                return self._each_sample(
                    args[0],
                    name,
                    lambda c, t: consistent_forward(
                        module, (c, *args[1:]), kwargs, self._seed(k, t), offset
                    ),
                )
            if n > 1 and shares_batch_mask(module, args[0] if args else None):
                return self._each_sample(
                    args[0], name, lambda c, t: original(c, *args[1:], **kwargs)
                )
            return original(*args, **kwargs)

        return forward

    def _each_sample(self, x: torch.Tensor, name: str, fn: Callable) -> object:
        """``fn(chunk, t)`` on each sample's copy of the batch, concatenated. Dropout modules
        called inside ``fn`` (a ``StochasticDepth`` branch) see that one sample and the call
        counts it would see in a loop, so nested masks match the loop strategy's."""
        ts, calls, outs = self.ts, self._calls, []
        try:
            for c, t in zip(_chunks(x, len(ts), name), ts, strict=True):
                self.ts, self._calls = [t], dict(calls)
                outs.append(fn(c, t))
        finally:
            self.ts = ts
        return _cat(outs)

    def __enter__(self) -> Sampler:
        try:
            for name, module, k in self.modules:
                previous = module.__dict__.get("forward")
                self._saved.append((module, previous))
                module.forward = self._wrapper(name, module, k, module.forward)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for module, previous in reversed(self._saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        self._saved.clear()
