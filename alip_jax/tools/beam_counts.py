"""Counting in a Beam pipeline without Beam metrics (which the DaskRunner
does not have): a stage yields Count(reason, n) beside its output; the
Counts are filtered out before the next stage and summed by `tally`."""

from __future__ import annotations

import collections
import typing


class Count(typing.NamedTuple):
  """A skip (or flag) counted, travelling beside a stage's output."""
  reason: str
  n: int = 1


def counted(counts: collections.Counter):
  return [Count(reason, n) for reason, n in sorted(counts.items())]


def is_count(element) -> bool:
  return isinstance(element, Count)


def not_count(element) -> bool:
  return not is_count(element)


def tally(elements) -> dict[str, int]:
  """The Counts among `elements`, and earlier tallies, summed (the rest are
  branch ends)."""
  total = collections.Counter()
  for element in elements:
    if is_count(element):
      total[element.reason] += element.n
    elif isinstance(element, dict):
      total.update(element)
  return dict(total)
