"""Intervals for experiments: a bootstrap over seeds × test queries.

An experiment's row is S training runs (seeds) evaluated on the same Q test
queries, so each metric is an [S, Q] array of per-query values (a hit at K,
a rank). Two rows are compared *paired*: the same seeds (the seed moves
initialisation, data order and augmentation alike in both) and the same
queries, so the per-query difference d[s, q] = a[s, q] − b[s, q] cancels
what the two share (an easy query stays easy).

The interval is a two-stage percentile bootstrap: each resample draws S
seeds with replacement and, independently, Q queries with replacement, and
takes the mean of d over that grid. Seeds and queries are the two sources
of variation we want the interval to carry: the training run's luck and the
test set's. Resampling both counts each cell's own noise twice (Owen 2007,
"the pigeonhole bootstrap"): for independent cells the interval's variance
is (2 − 1/S)·σ²/(S·Q), so it errs wide, by at most √2 in width: a
difference it calls resolved is resolved. The seed stage is coarse with
S = 3 (a bootstrap over three values underestimates their spread by about
(S − 1)/S in variance), which is why a headline claim asks for S ≥ 5.

A difference is *resolved* when its interval excludes 0.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float
  low: float
  high: float

  @property
  def resolved(self) -> bool:
    """The interval excludes 0 (a difference whose sign we can state)."""
    return self.low > 0 or self.high < 0

  def as_dict(self) -> dict:
    return {"mean": self.mean, "low": self.low, "high": self.high, "resolved": self.resolved}


def bootstrap(a, b=None, *, resamples: int = 2000, level: float = 0.95,
              seed: int = 0) -> Interval:
  """The mean of `a` [S, Q] (or of a − b, paired by seed and query) and its
  `level` percentile interval over `resamples` draws of seeds × queries."""
  d = np.asarray(a, np.float64)
  if b is not None:
    b = np.asarray(b, np.float64)
    if b.shape != d.shape:
      raise ValueError(f"paired rows need the same seeds × queries: {d.shape} vs {b.shape}")
    d = d - b
  if d.ndim != 2 or 0 in d.shape:
    raise ValueError(f"expected a non-empty [seeds, queries] array, got shape {d.shape}")
  num_seeds, num_queries = d.shape
  seed_counts = _counts(num_seeds, resamples, seed, 0)
  # Resampling as counts: mean over the drawn grid = w_sᵀ d w_q / (S·Q).
  per_seed = (d.astype(np.float32) @ _counts(num_queries, resamples, seed, 1).T
              ).astype(np.float64) / num_queries                    # [S, R]
  means = np.einsum("rs,sr->r", seed_counts, per_seed) / num_seeds  # [R]
  tail = (1 - level) / 2
  low, high = np.quantile(means, [tail, 1 - tail])
  return Interval(float(d.mean()), float(low), float(high))


@functools.lru_cache(maxsize=8)
def _counts(n: int, resamples: int, seed: int, stream: int) -> np.ndarray:
  """How often each of n units is drawn, per resample: [resamples, n]. The
  same draws serve every call with the same n and seed (common random
  numbers: a table's intervals are computed on one set of resamples, and a
  report over many rows costs one draw)."""
  rng = np.random.default_rng([seed, stream])
  counts = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float32)
  counts.flags.writeable = False
  return counts


def per_query_metrics(ranks) -> dict:
  """ranks [S, Q] (0 = the best positive ranked first) → per-query values of
  each reported metric: R@1/5/10 as hits (0/1) and the mean rank (1-based)."""
  ranks = np.asarray(ranks)
  return {"R@1": ranks < 1, "R@5": ranks < 5, "R@10": ranks < 10, "mean_rank": ranks + 1.0}
