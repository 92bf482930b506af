"""Stopping a run without losing or damaging a checkpoint: SIGTERM at the next
step boundary (`PreemptionNotice`), no save in the middle of non-finite
steps (`save_unless_diverging`), and the error that names the last good
checkpoint when a run diverges (`diverged_error`)."""

from __future__ import annotations

import logging
import signal
import threading

import jax

log = logging.getLogger(__name__)


class PreemptionNotice:
  """SIGTERM → stop at the next step boundary. One process: our own handler
  (a flag, no per-step sync). Several: Orbax's `reached_preemption`, which
  uses JAX's preemption sync so that all processes stop at the same step.
  Its SIGTERM handler is installed by `jax.distributed.initialize`, so ours
  must not replace it there."""

  def __init__(self):
    self.flag = False
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.flag = True

  def requested(self, manager, step: int) -> bool:
    if jax.process_count() > 1:
      return manager.reached_preemption(step)
    return self.flag

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def save_unless_diverging(saves, step, state, data_iter) -> None:
  """Saves, except in the middle of a run of skipped (non-finite) steps: their
  params are those that failed, and saving them would let Orbax's retention
  delete an older good checkpoint."""
  streak = int(jax.device_get(state["skips"]["consecutive"]))
  if streak:
    log.warning("step %d: not saved, the last %d step(s) were non-finite", step, streak)
    return
  saves.save(step, state, data_iter)


def diverged_error(manager, step: int, streak: int, loss) -> FloatingPointError:
  """The stop after `streak` non-finite steps up to `step`, naming the last
  checkpoint that is still good. The first non-finite step F computed its
  loss on the params of step F − 1, so those already failed (e.g. after an
  lr = 1e30 update whose own loss was finite): good is a checkpoint ≤ F − 2."""
  first_bad = step - streak + 1
  good = [s for s in manager.all_steps() if s <= first_bad - 2]
  where = (f"the last good checkpoint is step {max(good)} in {manager.directory}; move the "
           f"newer step directories aside, then re-run to resume from it" if good else
           f"no checkpoint in {manager.directory} predates it; start again in a new workdir")
  return FloatingPointError(
      f"{streak} steps in a row up to step {step} had a non-finite loss or gradient (loss "
      f"{loss}) and were skipped; the params computed by step {first_bad - 1} already failed "
      f"(checked: loss and gradient norm finite at every step), so {where}. Lower optim.lr or "
      f"check the data.")
