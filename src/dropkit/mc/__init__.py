"""Monte Carlo dropout: sample only the dropout at test time and summarise the samples.

* :func:`mc_mode` / :func:`enable`: eval everywhere except the dropout-family modules (and,
  with ``functional``, the modules that call dropout functions in their forward); BatchNorm
  keeps using and never updates its running statistics. Flags are restored afterwards.
* :func:`predict`: T samples by ``"loop"``, ``"batched"`` (replicated batch) or ``"prefix"``
  (deterministic part once, via ``torch.fx``), optionally with consistent masks
  (:func:`sample_seed`), summarised as an :class:`MCResult` (mean, variance, predictive and
  expected entropy, mutual information, variation ratio, log-likelihood). Without a
  ``chunk_size`` the replicated forwards are chunked to a memory budget
  (:func:`copies_within_budget`); prefix plans are cached per model (:func:`clear_plan_cache`).

Gal & Ghahramani 2016 (ICML, arXiv:1506.02142); Kirsch, van Amersfoort & Gal 2019 (BatchBALD,
arXiv:1906.08158) for consistent masks.
"""

from .budget import copies_within_budget
from .modes import MCHandle, enable, functional_parents, is_dropout_module, mc_mode
from .predict import STRATEGIES, predict
from .prefix import clear_plan_cache
from .result import TASKS, MCResult
from .sampling import sample_seed

__all__ = [
    "STRATEGIES",
    "TASKS",
    "MCHandle",
    "MCResult",
    "clear_plan_cache",
    "copies_within_budget",
    "enable",
    "functional_parents",
    "is_dropout_module",
    "mc_mode",
    "predict",
    "sample_seed",
]
