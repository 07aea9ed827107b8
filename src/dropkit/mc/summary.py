r"""Running summaries of MC samples, fed chunk by chunk (LM-scale outputs).

A chunk is ``(k, N, *out)``: ``k`` MC samples of a batch. Classification softmaxes each chunk
over the class dim and folds it into running statistics: the mean and the sum of squared
deviations (Chan, Golub & LeVeque 1979, pairwise update), the summed entropy
:math:`\sum_t H[p_t]` and the arg-max votes per class (``scatter_add`` into ``(N, *out)``
int32, no one-hot). Regression keeps the mean, the squared deviations and, with targets and
``tau``, a running ``logsumexp`` of the Gaussian log-likelihoods. Nothing larger than one chunk
is allocated, so with ``keep_samples=False`` the peak memory is O(k N |out|), not
O(T N |out|).
"""

from __future__ import annotations

import math

import torch

#: Elements per temporary of the entropy and squared-deviation passes (4 MiB in fp32): a
#: chunk is folded in slices of samples, so no full-size temporary is allocated.
_SLICE = 1 << 20


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class Accumulator:
    """Running statistics of one batch's samples.

    Args:
        task: ``"classification"`` or ``"regression"``.
        class_dim: the class dim of the model output (batch in dim 0); classification only.
        keep: keep the per-sample values (probabilities or outputs) as well.
        tau, targets: regression precision and targets ``(N, *out)`` for the likelihood.
    """

    def __init__(self, task: str, class_dim: int, keep: bool, tau=None, targets=None) -> None:
        self.task, self.dim, self.keep = task, class_dim, keep
        self.tau, self.targets = tau, targets
        self.count = 0
        self.mean = self.m2 = self.entropy = self.votes = self.lse = None
        self.kept: list[torch.Tensor] = []

    def add(self, chunk: torch.Tensor) -> None:
        """Fold ``(k, N, *out)`` samples in."""
        values = _float(chunk)
        k = values.shape[0]
        if self.task == "classification":
            d = self.dim + 1
            logits, values = values, values.softmax(d)
            winners = values.argmax(d, keepdim=True)  # (k, N, .., 1, ..)
            ent = self._entropy(logits, values, winners, d)
            self.entropy = ent if self.entropy is None else self.entropy + ent
            if self.votes is None:
                self.votes = torch.zeros(values.shape[1:], dtype=torch.int32, device=values.device)
            ones = torch.ones_like(winners[0], dtype=torch.int32)
            for j in range(k):
                self.votes.scatter_add_(self.dim, winners[j], ones)
        elif self.targets is not None and self.tau is not None:
            y = self.targets.to(values)
            logp = -0.5 * self.tau * (y - values).square()
            part = torch.logsumexp(logp, 0)
            self.lse = part if self.lse is None else torch.logaddexp(self.lse, part)
        mean_c = values.mean(0)
        m2_c = sum((v - mean_c).square_().sum(0) for v in self._slices(values))
        if self.mean is None:
            self.mean, self.m2 = mean_c, m2_c
        else:
            n, total = self.count, self.count + k
            delta = mean_c - self.mean
            self.mean = self.mean + delta * (k / total)
            self.m2 = self.m2 + m2_c + delta.square() * (n * k / total)
        self.count += k
        if self.keep:
            self.kept.append(values)

    def _entropy(self, logits, probs, winners, d: int) -> torch.Tensor:
        r"""Summed entropy over the chunk's samples, ``(N, ..)``, without a per-element log:
        :math:`H[p] = \operatorname{lse}(x) - \sum_c p_c x_c`, and
        :math:`\operatorname{lse}(x) = x_w - \log p_w` at the arg-max ``w`` (``p_w >= 1/C``).
        Logits of -inf (``0 * -inf``) fall back to ``entr``."""
        pairs = zip(self._slices(probs), self._slices(logits), strict=True)
        dot = torch.cat([(p * x).sum(d) for p, x in pairs])  # (k, N, ..)
        if bool(dot.isnan().any()):
            return sum(torch.special.entr(p).sum(d).sum(0) for p in self._slices(probs))
        lse = (logits.gather(d, winners) - probs.gather(d, winners).log()).squeeze(d)
        return (lse - dot).clamp_min_(0.0).sum(0)

    @staticmethod
    def _slices(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return values.split(max(1, _SLICE // max(1, values[0].numel())))

    def variance(self) -> torch.Tensor:
        """Per-element variance over the samples (divided by T)."""
        return self.m2 / self.count

    def samples(self) -> torch.Tensor | None:
        if not self.keep:
            return None
        return self.kept[0] if len(self.kept) == 1 else torch.cat(self.kept)  # no copy of one

    def log_likelihood_terms(self) -> torch.Tensor:
        """Regression: per-element log predictive density (needs targets and tau)."""
        t = self.count
        return self.lse - math.log(t) - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(self.tau)
