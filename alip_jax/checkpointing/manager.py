"""Orbax checkpoints of the train state *and* the Grain iterator position.

One checkpoint = {"state": params, optimiser state, gate running means, step;
"data_iter": the training iterator's state}. Orbax writes each step into a
temporary directory and renames it when complete, so a crash or SIGTERM
during a save leaves the previous checkpoint intact; `latest_step()` only
sees finished ones.
"""

from __future__ import annotations

import logging

from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from alip_jax import fileio, rundir
from alip_jax.checkpointing import restore

log = logging.getLogger(__name__)


def make_manager(directory: str, max_to_keep: int, keep_every: int = 0,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """Keeps the newest `max_to_keep` checkpoints, and every step divisible by
  `keep_every` (> 0) for good. Async saves write in the background while
  training goes on."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, keep_period=keep_every or None, create=True,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(directory, options=options,
                               item_names=("state", "data_iter"))


def save(manager: ocp.CheckpointManager, step: int, state, data_iter) -> None:
  """Starts an async save of `state` and `data_iter` at `step`."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=True)


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iter,
                   fallback: bool = True):
  """Restores the newest readable checkpoint into shardings of
  `abstract_state` (a pytree of jax.ShapeDtypeStruct with .sharding) and
  moves `data_iter` to its saved position. Returns the state, or None when
  there is none.

  With `fallback`, newer steps that do not read are reported, skipped and
  moved aside to `<step>.unreadable` (never deleted), so that Orbax neither
  counts them among the checkpoints it keeps nor collides with them when the
  run saves that step again."""
  def restore_step(step):
    restore.check_shapes(manager, step, abstract_state)
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data_iter=grain.checkpoint.CheckpointRestore(data_iter)))["state"]

  step, state, skipped = restore.restore_newest_readable(manager, restore_step, fallback)
  if skipped:
    moved = _move_aside(manager, skipped)
    log.warning("restored step %d: newer step(s) %s do not read and were skipped; moved aside, "
                "not deleted: %s (inspect or delete them yourself)", step, skipped, moved)
  return state


def _move_aside(manager: ocp.CheckpointManager, steps) -> list[str]:
  moved = [fileio.join(str(manager.directory), f"{s}.unreadable") for s in steps]
  if jax.process_index() == 0:
    for s, target in zip(steps, moved):
      epath.Path(fileio.join(str(manager.directory), str(s))).rename(target)
  multihost_utils.sync_global_devices("alip_jax:unreadable_moved")
  manager.reload()
  return moved


class SaveFailed(RuntimeError):
  """A checkpoint save that did not finish."""


class SaveWatcher:
  """Notices a failed async save at the next step boundary, not one
  checkpoint interval later. `check()` costs nothing while a save is still
  being written and one directory lookup when it has just ended."""

  def __init__(self, manager: ocp.CheckpointManager):
    self.manager, self.pending = manager, None

  def save(self, step: int, state, data_iter) -> None:
    """`save` (below), after checking the previous one ended well."""
    self.check(step, wait=True)
    save(self.manager, step, state, data_iter)
    self.pending = step

  def check(self, at_step: int, wait: bool = False) -> None:
    """Raises SaveFailed if the pending save has ended badly; with `wait`,
    first waits for it to end."""
    if self.pending is None or (not wait and self.manager.is_saving_in_progress()):
      return
    step, self.pending = self.pending, None
    error = None
    try:
      self.manager.wait_until_finished()  # re-raises the background save's error
    except Exception as e:  # noqa: BLE001
      error = e
    if error is None and step in rundir.steps_in(str(self.manager.directory)):
      return
    earlier = [s for s in rundir.steps_in(str(self.manager.directory)) if s != step]
    reason = f"{type(error).__name__}: {error}" if error else "its directory was not finalised"
    raise SaveFailed(
        f"the checkpoint save of step {step} failed ({reason}); training stopped at step "
        f"{at_step} so that no more work is lost. Checkpoints already saved are untouched: "
        f"steps {earlier or 'none'} in {self.manager.directory}. Free disk space or fix the "
        f"storage, then re-run to resume.") from error
