"""Progress bars (tqdm) for the long host loops: captioning, evaluation.

A bar draws only when stderr is a terminal, so logs, CI and redirected runs
stay clean; `TQDM_DISABLE=1` (tqdm's own switch) or `disable=True` turns it
off in a terminal too. Bars go to stderr, beside the log lines.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def enabled(disable: bool = False) -> bool:
  if disable or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
    return False
  isatty = getattr(sys.stderr, "isatty", None)
  return bool(isatty and isatty())


def bar(iterable=None, *, total=None, desc: str = "", unit: str = "it",
        disable: bool = False, leave: bool = False) -> tqdm:
  """A tqdm bar over `iterable` (or one to `.update()` by hand) that is
  silent unless `enabled()`. `leave=False`: it vanishes when done."""
  return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
              disable=not enabled(disable), dynamic_ncols=True)
