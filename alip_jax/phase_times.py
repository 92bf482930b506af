"""Where a run's time goes: wall time, CPU time (user and kernel) and minor
page faults, per named phase (start-up, compile, steps, evaluation, …).

The CPU figures are the whole process's (`getrusage(RUSAGE_SELF)`: XLA's
thread pool, Grain's read threads and Orbax's writer included), so a phase's
user + system time can exceed its wall time on several cores. A high system
share or millions of minor faults point at memory churn, not arithmetic
(docs/BENCHMARKS.md, "The demo on a 2-core CPU").
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time


@dataclasses.dataclass
class Usage:
  wall_s: float = 0.0
  user_s: float = 0.0
  sys_s: float = 0.0
  minor_faults: int = 0

  def __add__(self, other: "Usage") -> "Usage":
    return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

  def __sub__(self, other: "Usage") -> "Usage":
    return Usage(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def usage_now() -> Usage:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return Usage(time.perf_counter(), r.ru_utime, r.ru_stime, r.ru_minflt)


class PhaseTimes:
  """Accumulates `Usage` per phase name, in first-seen order:

      phases = PhaseTimes()
      with phases.measure("eval"):
        ...
  """

  def __init__(self):
    self.totals: dict[str, Usage] = {}

  @contextlib.contextmanager
  def measure(self, name: str):
    start = usage_now()
    try:
      yield
    finally:
      self.add(name, usage_now() - start)

  def add(self, name: str, usage: Usage) -> None:
    self.totals[name] = self.totals.get(name, Usage()) + usage

  def add_dict(self, phases: dict) -> None:
    """Adds another run's `as_dict()` (e.g. each demo row's)."""
    for name, u in phases.items():
      self.add(name, Usage(u["wall_s"], u["user_s"], u["sys_s"], u["minor_faults"]))

  def as_dict(self) -> dict:
    return {name: {"wall_s": round(u.wall_s, 2), "user_s": round(u.user_s, 2),
                   "sys_s": round(u.sys_s, 2), "minor_faults": u.minor_faults}
            for name, u in self.totals.items()}


def markdown_table(phases: dict, title: str = "phase") -> str:
  """`PhaseTimes.as_dict()` (or one read back from JSON) as a table."""
  lines = [f"| {title} | wall s | user s | sys s | sys share | minor faults |",
           "|---|---|---|---|---|---|"]
  for name, u in phases.items():
    cpu = u["user_s"] + u["sys_s"]
    share = f"{100 * u['sys_s'] / cpu:.0f} %" if cpu > 0 else "—"
    lines.append(f"| {name} | {u['wall_s']:.1f} | {u['user_s']:.1f} | {u['sys_s']:.1f} | {share} "
                 f"| {u['minor_faults']:,} |")
  return "\n".join(lines)


class TrainPhases(PhaseTimes):
  """The trainer's phases. `start-up` (config to the first step), `first
  step (compile)` (tracing, XLA compile and the first step's run), `steps`
  (the loop less everything else measured inside it), `loader wait`
  (fetching a batch that was not ready), `checkpoint`, `eval` and `end`
  (waiting for the last saves, closing). They add up to the run's wall time."""

  ORDER = ("start-up", "first step (compile)", "steps", "loader wait", "checkpoint", "eval",
           "end")

  def __init__(self):
    super().__init__()
    self._loop = None

  def loop_started(self) -> None:
    self._loop = usage_now()

  def first_step_done(self) -> None:
    """After the first step has run (its loss fetched)."""
    self.add("first step (compile)",
             usage_now() - self._loop - self.totals.get("loader wait", Usage()))

  def loop_done(self) -> None:
    if self._loop is None:  # no step ran (a finished run re-evaluated)
      return
    inside = sum((u for name, u in self.totals.items() if name != "start-up"), Usage())
    self.add("steps", usage_now() - self._loop - inside)
    self._loop = None

  def as_dict(self) -> dict:
    phases = super().as_dict()
    order = [n for n in self.ORDER if n in phases] + [n for n in phases if n not in self.ORDER]
    return {name: phases[name] for name in order}
