"""Orbax checkpoints of the train state *and* the Grain iterator position.

One checkpoint = {"state": params, optimiser state, gate running means, step;
"data_iter": the training iterator's state}. Orbax writes each step into a
temporary directory and renames it when complete, so a crash or SIGTERM
during a save leaves the previous checkpoint intact; `latest_step()` only
sees finished ones.
"""

from __future__ import annotations

import os

import grain
import orbax.checkpoint as ocp

from alip_jax import fileio


def checkpoint_dir(workdir: str) -> str:
  """Where a workdir's checkpoints live (Orbax writes gs:// paths itself;
  it refuses relative local ones, so `--workdir runs/x` is made absolute)."""
  if not fileio.is_remote(workdir):
    workdir = os.path.abspath(workdir)
  return fileio.join(workdir, "checkpoints")


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


def restore_latest(manager: ocp.CheckpointManager, abstract_state, data_iter):
  """Restores the newest checkpoint into shardings of `abstract_state`
  (a pytree of jax.ShapeDtypeStruct with .sharding) and moves `data_iter` to
  its saved position. Returns the state, or None when there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored["state"]
