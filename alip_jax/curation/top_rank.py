"""--top_fraction without sorting: every scored row's rank as one int, and
the int at a given rank from a Beam quantile summary (the filter's
threshold, curation/beam_filter.py)."""

from __future__ import annotations

import numpy as np
from apache_beam.transforms import stats as beam_stats

_LAST = (1 << 64) - 1


class QuantileAtRank(beam_stats.ApproximateQuantilesCombineFn):
  """Beam's quantile summary (Munro–Paterson buffers, as behind
  beam.ApproximateQuantiles) asked for one rank. Exact while nothing was
  collapsed: up to num_buffers × buffer_size elements (1,708,994 = 14 × 122,071 with
  beam_filter's epsilon and max rows: ~100 MB of ints); beyond, the element returned has a rank
  within epsilon × N of the one asked for (Beam's bound, for N up to
  max_num_elements). Memory: num_buffers × buffer_size elements per
  accumulator, whatever N."""

  def element_at(self, state, rank: int):
    """(element of 0-based ascending rank `rank`, exact?): walks the
    summary's elements in order, each standing for `weight` inputs."""
    state.finalize()
    weighted = sorted((e, buffer.weights[0]) for buffer in state.buffers for e in buffer.elements)
    seen = 0
    for element, weight in weighted:
      seen += weight
      if seen > rank:
        break
    return element, all(buffer.weights[0] == 1 for buffer in state.buffers)


def _ordered(values: np.ndarray) -> np.ndarray:
  """Floats → uint64 in the same order, NaN lowest and -0.0 == 0.0 (as
  np.lexsort ranks them in filtering.select)."""
  x = np.asarray(values, np.float64) + 0.0
  bits = x.view(np.uint64)
  return np.where(np.isnan(x), np.uint64(0),
                  np.where(bits >> np.uint64(63), ~bits, bits | np.uint64(1 << 63)))


def sort_keys(batch: dict, by: str) -> list[int]:
  """One int per row, larger = ranked higher: `by`, then s_tc, then the
  smaller index (filtering.select's order)."""
  return [(int(a) << 128) | (int(b) << 64) | (_LAST - int(i)) for a, b, i in zip(
      _ordered(batch[by]), _ordered(batch["s_tc"]), batch["index"])]
