"""Restoring a checkpoint without being stopped by a damaged one.

A step whose files do not read (a truncated or corrupted file, a missing
array) is reported in one line — step, file, error class — and the newest
readable earlier step is used instead (`fallback=True`, the trainer's
`train.restore_fallback`). A state whose *shapes* differ from the saved ones
is not damage but another model: that is an error naming the parameter, for
every step alike.
"""

from __future__ import annotations

import logging
import re

import jax
import orbax.checkpoint as ocp

from alip_jax import fileio

log = logging.getLogger(__name__)


class NoReadableCheckpoint(RuntimeError):
  """Every checkpoint step failed to read (or the requested one did)."""


class StateShapeMismatch(ValueError):
  """The saved state and the state this config builds differ in shape."""


def _leaf_name(key_path) -> str:
  """'opt/1/0/mu/image/…': the same name for a namedtuple field (as the
  state holds it) and a dict key (as the checkpoint's metadata has it)."""
  parts = []
  for k in key_path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def check_shapes(manager: ocp.CheckpointManager, step: int, abstract_state, item="state"):
  """Raises StateShapeMismatch naming every leaf whose saved shape differs
  from `abstract_state`'s (Orbax's own error names no parameter)."""
  path = fileio.join(str(manager.directory), str(step), item)
  from etils import epath
  handler = ocp.StandardCheckpointHandler()
  try:
    saved = handler.metadata(epath.Path(path))
  finally:
    handler.close()
  if saved is None or not getattr(saved, "tree", saved):
    # A damaged step, not another model: the caller falls back.
    raise OSError(f"the array metadata of {path} does not read")
  saved = getattr(saved, "tree", saved)
  saved_flat = {_leaf_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
  wrong = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
    name = _leaf_name(key_path)
    stored = saved_flat.pop(name, None)
    if stored is None:
      wrong.append(f"  {name}: not in the checkpoint, {tuple(leaf.shape)} in this config")
    elif tuple(stored.shape) != tuple(leaf.shape):
      wrong.append(f"  {name}: {tuple(stored.shape)} in the checkpoint, "
                   f"{tuple(leaf.shape)} in this config")
  wrong += [f"  {name}: in the checkpoint, not in this config" for name in sorted(saved_flat)]
  if wrong:
    shown = "\n".join(wrong[:20]) + (f"\n  … and {len(wrong) - 20} more" if len(wrong) > 20 else "")
    raise StateShapeMismatch(
        f"checkpoint step {step} in {manager.directory} was saved by another model or "
        f"optimiser than this config builds:\n{shown}\nUse the config the run was started "
        f"with (its workdir's config.json), or start a new run in a new workdir.")


def describe_failure(error: BaseException, step_dir: str) -> str:
  """'file (array): error class' for a failed read, from the innermost error
  in the chain that names a file (TensorStore's do), else the step directory."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in reversed(chain):
    text = str(e)
    files = re.findall(r'local file "([^"]+)"', text) or re.findall(r"'(/[^']+)'", text)
    if files:
      array = re.search(r'Error reading "([^"/]+)', text)
      status = re.match(r"([A-Z_]{4,}):", text)
      kind = type(e).__name__ + (f" {status.group(1)}" if status else "")
      return f"{files[-1]}{f' (array {array.group(1)})' if array else ''}: {kind}"
  return f"{step_dir}: {type(chain[0]).__name__}"


def restore_newest_readable(manager: ocp.CheckpointManager, restore_step, fallback: bool = True,
                            step: int | None = None):
  """`restore_step(step)` on the newest step (or `step`), falling back to
  older ones when it fails to read. Returns (step, restored, skipped steps),
  or (None, None, []) when there is no checkpoint. A requested `step` that
  does not exist is an error listing those that do; `fallback=False` (or a
  requested step) re-raises the first failure after its one-line report."""
  steps = sorted(manager.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise FileNotFoundError(f"{manager.directory} has no checkpoint step {step}; the steps "
                              f"there are {sorted(steps) or 'none'}")
    steps, fallback = [step], False
  skipped = []
  for candidate in steps:
    try:
      return candidate, restore_step(candidate), skipped
    except (StateShapeMismatch, KeyboardInterrupt):
      raise
    except Exception as e:  # noqa: BLE001 -- any read failure is reported the same way
      where = describe_failure(e, fileio.join(str(manager.directory), str(candidate)))
      log.error("checkpoint step %d does not read: %s", candidate, where)
      if not fallback:
        raise NoReadableCheckpoint(
            f"checkpoint step {candidate} does not read ({where}). Other steps: "
            f"{sorted(s for s in manager.all_steps() if s != candidate) or 'none'}") from e
      skipped.append(candidate)
  if skipped:
    raise NoReadableCheckpoint(f"no checkpoint in {manager.directory} reads: steps {skipped} "
                               f"all failed (see the lines above); they were left in place")
  return None, None, []
