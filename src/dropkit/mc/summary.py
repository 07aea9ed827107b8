r"""Running summaries of MC samples, fed chunk by chunk (LM-scale outputs).

A chunk is ``(k, N, *out)``: ``k`` MC samples of a batch. Classification softmaxes each chunk
over the class dim and folds it into running statistics: the mean and the sum of squared
deviations (Chan, Golub & LeVeque 1979, pairwise update), the summed entropy
:math:`\sum_t H[p_t]` and the arg-max votes per class (``scatter_add`` into ``(N, *out)``
int32, no one-hot). Regression keeps the mean, the squared deviations and, with targets and
``tau``, a running ``logsumexp`` of the Gaussian log-likelihoods. Nothing larger than one chunk
is allocated, so with ``keep_samples=False`` the peak memory is O(k N |out|), not
O(T N |out|). Classification reads each chunk one block of rows at a time, every statistic
from the block while it is in the cache; kept samples are written into one ``(T, N, *out)``
tensor when T is known. Float32 chunks on the CPU, contiguous with the classes last (LM
logits), of at least :data:`KERNEL_MIN` elements, are folded by one numba kernel
(:mod:`dropkit.mc.summary_kernel`) that reads each row once, ~3x faster than the torch ops;
every other chunk by the torch ops.
"""

from __future__ import annotations

import math

import torch

#: Chunks of fewer elements stay on the torch ops: the kernel's gain there is microseconds,
#: less than the first call's import of numba and load (or compile) of the kernel.
KERNEL_MIN = 1 << 16

#: Elements per temporary of the entropy and squared-deviation passes (4 MiB in fp32): a
#: chunk is folded in slices of samples, so no full-size temporary is allocated.
_SLICE = 1 << 20


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _fast(logits: torch.Tensor, d: int, out: torch.Tensor | None):
    """:mod:`dropkit.mc.summary_kernel` where it folds the chunk, else None: float32 on the
    CPU, contiguous, classes last (the kernel reads whole rows of classes), at least
    :data:`KERNEL_MIN` elements, numba present. Imported here, not with dropkit: importing
    numba costs a quarter of a second that small workloads need not pay."""
    if not (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and d == logits.dim() - 1
        and max(1, KERNEL_MIN) <= logits.numel()
        and logits.is_contiguous()
        and (out is None or (out.is_contiguous() and out.dtype == torch.float32))
        and not logits.requires_grad
    ):
        return None
    from . import summary_kernel

    return summary_kernel if summary_kernel.AVAILABLE else None


class Accumulator:
    """Running statistics of one batch's samples.

    Args:
        task: ``"classification"`` or ``"regression"``.
        class_dim: the class dim of the model output (batch in dim 0); classification only.
        keep: keep the per-sample values (probabilities or outputs) as well.
        tau, targets: regression precision and targets ``(N, *out)`` for the likelihood.
        total: T when known: the kept values are written into one ``(T, N, *out)`` tensor
            as the chunks come (no concatenation at the end).
    """

    def __init__(
        self, task: str, class_dim: int, keep: bool, tau=None, targets=None, total=None
    ) -> None:
        self.task, self.dim, self.keep = task, class_dim, keep
        self.tau, self.targets, self.total = tau, targets, total
        self.count = 0
        self.mean = self.m2 = self.entropy = self.votes = self.lse = None
        self.kept: list[torch.Tensor] = []
        self._buffer: torch.Tensor | None = None

    def add(self, chunk: torch.Tensor, owned: bool = False) -> None:
        """Fold ``(k, N, *out)`` samples in. ``owned``: nobody else holds ``chunk``, so a
        classification chunk of all T samples can take its probabilities in place."""
        values = _float(chunk)
        k = values.shape[0]
        if self.task == "classification":
            mean_c, m2_c = self._classes(values, owned or values is not chunk)
        else:
            if self.targets is not None and self.tau is not None:
                y = self.targets.to(values)
                logp = -0.5 * self.tau * (y - values).square()
                part = torch.logsumexp(logp, 0)
                self.lse = part if self.lse is None else torch.logaddexp(self.lse, part)
            mean_c = values.mean(0)
            m2_c = sum((v - mean_c).square_().sum(0) for v in self._slices(values))
            if self.keep:
                self._keep(values)
        if self.mean is None:
            self.mean, self.m2 = mean_c, m2_c
        else:
            n, total = self.count, self.count + k
            delta = mean_c - self.mean
            self.mean = self.mean + delta * (k / total)
            self.m2 = self.m2 + m2_c + delta.square() * (n * k / total)
        self.count += k

    def _slot(self, k: int, like: torch.Tensor) -> torch.Tensor | None:
        """With ``total`` known, where the next ``k`` kept samples go in the one ``(T, N, ..)``
        buffer (made on the first chunk); None without ``total`` (chunks are listed)."""
        if self.total is None:
            return None
        if self.count + k > self.total:
            raise ValueError(f"more than the {self.total} samples announced")
        if self._buffer is None:
            self._buffer = like.new_empty((self.total, *like.shape[1:]))
        return self._buffer[self.count : self.count + k]

    def _keep(self, values: torch.Tensor) -> None:
        slot = self._slot(values.shape[0], values)
        if slot is None:
            self.kept.append(values)
        else:
            slot.copy_(values)

    def _classes(self, logits: torch.Tensor, owned: bool) -> tuple:
        r"""Softmax, entropy, votes, mean and squared deviations of a chunk ``(k, N, ..)``,
        one block of rows at a time (a block of all k samples stays in the cache while every
        statistic is read from it; the statistics of different rows are independent, so no
        block needs another's). Per block, with :math:`m = \max_c x_c`,
        :math:`e = \exp(x - m)`, :math:`s = \sum_c e_c`: :math:`p = e / s` and
        :math:`H[p] = m + \log s - \sum_c e_c x_c / s` (no per-element log); logits of
        ``-inf`` (``0 * -inf``) fall back to ``entr``. Returns ``(mean, m2)`` of the chunk;
        the probabilities are only written out when kept: into the logits themselves when
        ``owned`` and the chunk holds all T samples, else into the ``(T, N, ..)`` buffer.
        Where :func:`_fast` allows, the fused kernel computes the same quantities (as
        :math:`H = \log s - \sum_c e_c (x_c - m) / s`, no cancellation against ``m``)."""
        d = self.dim + 1
        k = logits.shape[0]
        stats = logits.shape[1:]  # (N, ..)
        out = None
        if self.keep:
            whole = owned and self.total == k and self.count == 0 and logits.is_contiguous()
            out = logits if whole else self._slot(k, logits)  # in place: no new (T, N, ..)
            if out is None:  # listed chunks: a fresh tensor of probabilities
                out = torch.empty_like(logits)
            if out is logits or self._buffer is None:
                self.kept.append(out)
        mean_c = logits.new_empty(stats)
        m2_c = logits.new_empty(stats)
        entropy = logits.new_empty(stats[: d - 1] + stats[d:])
        if self.votes is None:
            self.votes = torch.zeros(stats, dtype=torch.int32, device=logits.device)
        kernel = _fast(logits, d, out)
        if kernel is not None:
            self._classes_kernel(kernel, logits, out, mean_c, m2_c, entropy)
        else:
            self._classes_torch(logits, d, out, mean_c, m2_c, entropy)
        self.entropy = entropy if self.entropy is None else self.entropy + entropy
        return mean_c, m2_c

    def _classes_kernel(self, kernel, logits, out, mean_c, m2_c, entropy) -> None:
        """Float32 logits, contiguous, classes last: the fused kernel of
        :mod:`dropkit.mc.summary_kernel` (one read of each row); the rows it leaves (NaN,
        ``+inf``, all ``-inf``: untouched there) go through :meth:`_classes_torch`."""
        k, v = logits.shape[0], logits.shape[-1]
        x = logits.view(k, -1, v)
        rows = x.shape[1]
        o = None if out is None else out.view(k, rows, v)
        mean, m2 = mean_c.view(rows, v), m2_c.view(rows, v)
        ent, votes = entropy.view(rows), self.votes.view(rows, v)
        bad = torch.empty(rows, dtype=torch.uint8)
        kernel.fold(
            x.numpy(),
            None if o is None else o.numpy(),
            mean.numpy(),
            m2.numpy(),
            ent.numpy(),
            votes.numpy(),
            bad.numpy(),
        )
        left = bad.nonzero().squeeze(1)
        if left.numel():
            sub = x.index_select(1, left)  # a copy: rows the kernel did not write
            shape = sub.shape[1:]
            sub_mean, sub_m2 = sub.new_empty(shape), sub.new_empty(shape)
            sub_ent = sub.new_empty(shape[:1])
            sub_out = None if o is None else torch.empty_like(sub)
            sub_votes = votes.index_select(0, left)
            self._classes_torch(sub, 2, sub_out, sub_mean, sub_m2, sub_ent, sub_votes)
            mean.index_copy_(0, left, sub_mean)
            m2.index_copy_(0, left, sub_m2)
            ent.index_copy_(0, left, sub_ent)
            votes.index_copy_(0, left, sub_votes)
            if o is not None:
                o.index_copy_(1, left, sub_out)

    def _classes_torch(self, logits, d, out, mean_c, m2_c, entropy, votes_all=None) -> None:
        """The torch formulas of :meth:`_classes`, block by block; any dtype, layout and
        class dim ``d`` of the chunk. Votes go into ``votes_all`` (default ``self.votes``)."""
        n = logits.shape[1]
        if votes_all is None:
            votes_all = self.votes
        row = max(1, logits[:, :1].numel())
        step = max(1, _SLICE // row)
        # two block-sized scratch tensors, reused: a fresh multi-MiB temporary per op would
        # cost more in page faults than the arithmetic
        scratch = logits.new_empty((2, min(n, step) * row))
        for i in range(0, n, step):
            j = min(n, i + step)
            x = logits[:, i:j]
            e = scratch[0, : x.numel()].view(x.shape)
            tmp = scratch[1, : x.numel()].view(x.shape)
            top, winners = x.max(d, keepdim=True)  # the arg-max of the logits is p's
            torch.sub(x, top, out=e).exp_()
            s = e.sum(d, keepdim=True)
            dot = torch.mul(e, x, out=tmp).sum(d, keepdim=True).div_(s)
            probs = e.div_(s)
            if bool(dot.isnan().any()):
                ent = torch.special.entr(probs).sum(d)
            else:
                ent = (top + s.log_() - dot).squeeze(d).clamp_min_(0.0)
            entropy[i:j] = ent.sum(0)
            votes = votes_all[i:j]
            ones = torch.ones_like(winners[0], dtype=torch.int32)
            for w in winners:
                votes.scatter_add_(d - 1, w, ones)
            block_mean = probs.mean(0)
            mean_c[i:j] = block_mean
            m2_c[i:j] = torch.sub(probs, block_mean, out=tmp).square_().sum(0)
            if out is not None:
                out[:, i:j] = probs

    @staticmethod
    def _slices(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return values.split(max(1, _SLICE // max(1, values[0].numel())))

    def variance(self) -> torch.Tensor:
        """Per-element variance over the samples (divided by T)."""
        return self.m2 / self.count

    def samples(self) -> torch.Tensor | None:
        if not self.keep:
            return None
        if self._buffer is not None and not self.kept:
            return self._buffer[: self.count]
        return self.kept[0] if len(self.kept) == 1 else torch.cat(self.kept)  # no copy of one

    def log_likelihood_terms(self) -> torch.Tensor:
        """Regression: per-element log predictive density (needs targets and tau)."""
        t = self.count
        return self.lse - math.log(t) - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(self.tau)
