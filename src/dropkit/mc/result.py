r"""Summaries of T Monte Carlo samples: predictive mean and variance, entropies, BALD, likelihood.

Gal & Ghahramani 2016 (ICML, arXiv:1506.02142) for MC dropout and the regression variance and
log-likelihood; Houlsby et al. 2011 and Gal, Islam & Ghahramani 2017 (arXiv:1703.02910) for
the mutual information (BALD). Entropies are in nats and use ``torch.special.entr``, so
:math:`0 \log 0 = 0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .summary import Accumulator

TASKS = ("classification", "regression")


@dataclass(frozen=True, repr=False)
class MCResult:
    r"""The T samples of :func:`dropkit.mc.predict` and their summaries.

    Layout: sample-major, ``samples`` is ``(T, N, *out)`` with ``out`` the model's output shape
    without its batch dim; every summary is per input, ``(N, ...)``.

    Attributes:
        samples: classification: per-sample class probabilities, the softmax of the logits
            over the class dim (``class_dim`` of the model output, ``class_dim + 1`` here);
            regression: the outputs. None with ``keep_samples=False``.
        mean: :math:`\bar p = \frac1T\sum_t p_t` (probabilities are averaged, not logits) or
            :math:`\bar\mu = \frac1T\sum_t \mu_t`.
        variance: per-element variance over the T samples (divided by T, not T - 1), plus
            :math:`1/\tau` for regression when ``tau`` is given:
            :math:`\tau^{-1} + \frac1T\sum_t\mu_t^2 - \bar\mu^2`.
        predictive_entropy: :math:`H[\bar p] = -\sum_c \bar p_c\log\bar p_c` (total).
        expected_entropy: :math:`\frac1T\sum_t H[p_t]` (aleatoric).
        mutual_information: :math:`H[\bar p] - \frac1T\sum_t H[p_t]` (epistemic, BALD), clamped
            at 0 against rounding.
        variation_ratio: :math:`1 - f_{\mathrm{mode}}/T`, ``f_mode`` the number of samples
            whose arg-max is the most frequent class.
        log_likelihood: mean test log-likelihood when targets are given: regression (with
            ``tau``) :math:`\mathrm{logsumexp}_t \log\mathcal N(y;\mu_t,\tau^{-1}) - \log T`
            averaged over every element; classification :math:`\log\bar p_y` averaged.
        task: ``"classification"`` or ``"regression"``.
        strategy: the strategy that ran (``"prefix"``, ``"batched"`` or ``"loop"``), with the
            reason in parentheses when ``"auto"``/``"prefix"`` fell back.
        sampled: ``(module path, op)`` pairs of the stochastic calls that were sampled.
        class_dim: the class dim of the model output (classification).
        count: T.
    """

    samples: torch.Tensor | None
    mean: torch.Tensor
    variance: torch.Tensor
    task: str
    strategy: str
    predictive_entropy: torch.Tensor | None = None
    expected_entropy: torch.Tensor | None = None
    mutual_information: torch.Tensor | None = None
    variation_ratio: torch.Tensor | None = None
    log_likelihood: torch.Tensor | None = None
    sampled: tuple[tuple[str, str], ...] = ()
    class_dim: int | None = None
    count: int = 0

    @property
    def num_samples(self) -> int:
        """T."""
        return self.samples.shape[0] if self.samples is not None else self.count

    def __repr__(self) -> str:
        """One line: what ran and the shapes, with the headline summaries as numbers (the
        tensors themselves are attributes; printing them all would bury the result)."""
        n = self.mean.shape[0] if self.mean.dim() else 1
        parts = [self.task, f"T={self.num_samples}", f"N={n}"]
        if self.samples is not None:
            parts.append(f"samples={tuple(self.samples.shape)}")
        parts.append(f"mean/variance={tuple(self.mean.shape)}")
        if self.mutual_information is not None and self.mutual_information.numel():
            mi = self.mutual_information.float()
            parts.append(f"mutual_information mean={mi.mean():.4g} max={mi.max():.4g}")
        elif self.variance.numel():
            parts.append(f"variance mean={self.variance.float().mean():.4g}")
        if self.log_likelihood is not None:
            parts.append(f"log_likelihood={float(self.log_likelihood):.4g}")
        modules = len({module for module, _ in self.sampled})
        parts.append(f"strategy={self.strategy!r}")
        parts.append(f"sampled={len(self.sampled)} ops in {modules} modules")
        return f"MCResult({', '.join(parts)})"


def _check_targets(targets: torch.Tensor, shape: tuple, what: str) -> None:
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(
            f"targets must have shape {tuple(shape)} ({what}), got {tuple(targets.shape)}"
        )


def summarize(
    outputs: torch.Tensor,
    task: str,
    strategy: str,
    *,
    tau: float | None = None,
    targets: torch.Tensor | None = None,
    class_dim: int = 1,
) -> MCResult:
    """Build an :class:`MCResult` from raw model outputs ``(T, N, *out)`` (classes in dim
    ``class_dim`` of the model output, i.e. ``class_dim + 1`` here)."""
    if task == "classification" and outputs.dim() < 3:
        raise ValueError(
            "classification needs logits of shape (N, C, ...) (classes in dim 1), got outputs "
            f"of shape {tuple(outputs.shape[1:])}; use task='regression' for other outputs"
        )
    if task == "regression" and targets is not None and tau is None:
        raise ValueError("regression log-likelihood needs tau (the model precision)")
    acc = Accumulator(task, class_dim, True, tau, targets)
    acc.add(outputs)
    return combine([acc], task, strategy, tau=tau, targets=targets)


def combine(
    accs: list[Accumulator],
    task: str,
    strategy: str,
    *,
    tau: float | None = None,
    targets: torch.Tensor | None = None,
    sampled: tuple = (),
) -> MCResult:
    """The :class:`MCResult` of per-batch :class:`~dropkit.mc.summary.Accumulator` s
    (concatenated along N)."""
    t = accs[0].count
    kept = [a.samples() for a in accs]
    samples = None if kept[0] is None else kept[0] if len(kept) == 1 else torch.cat(kept, 1)
    mean = torch.cat([a.mean for a in accs])
    variance = torch.cat([a.variance() for a in accs])
    if task == "regression":
        ll = None
        if tau is not None:
            variance = variance + 1.0 / tau
        if targets is not None:
            if tau is None:
                raise ValueError("regression log-likelihood needs tau (the model precision)")
            _check_targets(targets, mean.shape, "the model output without T")
            ll = torch.cat([a.log_likelihood_terms() for a in accs]).mean()
        return MCResult(
            samples, mean, variance, task, strategy, log_likelihood=ll, sampled=sampled, count=t
        )
    cd = accs[0].dim
    predictive = torch.special.entr(mean).sum(cd)
    expected = torch.cat([a.entropy for a in accs]) / t
    mi = (predictive - expected).clamp_min(0.0)
    votes = torch.cat([a.votes for a in accs])
    variation = 1.0 - votes.amax(cd).to(mean.dtype) / t
    ll = None
    if targets is not None:
        shape = mean.shape[:cd] + mean.shape[cd + 1 :]
        _check_targets(targets, shape, "class indices per input")
        ll = mean.gather(cd, targets.long().unsqueeze(cd)).log().mean()
    return MCResult(
        samples, mean, variance, task, strategy, predictive, expected, mi, variation, ll,
        sampled, cd, t,
    )  # fmt: skip
