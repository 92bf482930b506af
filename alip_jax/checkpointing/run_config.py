"""The run-directory contract: a workdir holds one run, and its config.json
says what that run is.

The first run writes `config.json`. A later run on the same workdir (a
resume) compares its config with it *before writing anything*:

- fields that give the train state its shapes or its meaning (the model,
  the loss, the data schema and order, the tokenizer, the seed, the global
  batch) must be equal: a difference is an error that lists each field
  `old → new` and the ways out;
- every other field (steps, evaluation, logging, checkpointing, the learning
  rate and its schedule, the mesh, data paths and threads, precision and
  rematerialisation) may change on resume: each change is logged.

When a resume changes the config, the one it replaces is kept as
`config.<S>.json`, S being the newest checkpoint step at that moment (the
step up to which the old config was in force), so the history is never lost.
"""

from __future__ import annotations

import logging

from alip_jax import fileio

log = logging.getLogger(__name__)

# Prefixes (of dotted config keys) that fix the state's shapes or meaning...
FIXED = ("model", "loss", "seed", "data.image_size", "data.context_length",
         "data.train_split", "data.synthetic_num_train", "data.tokenizer", "train.batch_size",
         "optim.decay_mask")
# ...and, inside them, what is only how the same thing is computed.
FREE_INSIDE_FIXED = ("model.dtype", "model.remat", "model.attention", "loss.chunked",
                     "loss.chunk_above")
_ABSENT = "(absent)"


class RunConfigMismatch(ValueError):
  """A resume whose config changes what the saved state means."""


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def _under(key, prefixes):
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def is_fixed(key: str) -> bool:
  return _under(key, FIXED) and not _under(key, FREE_INSIDE_FIXED)


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
  """[(dotted key, old value, new value)] for keys whose values differ; a key
  only one side has shows `(absent)` on the other."""
  old_flat, new_flat = _flatten(old), _flatten(new)
  keys = sorted(set(old_flat) | set(new_flat))
  return [(k, old_flat.get(k, _ABSENT), new_flat.get(k, _ABSENT)) for k in keys
          if old_flat.get(k, _ABSENT) != new_flat.get(k, _ABSENT)]


def _as_dict(config) -> dict:
  import json
  return json.loads(config.to_json_best_effort())


def check_resume(config, workdir: str, saved_steps: list[int]) -> list:
  """Compares `config` with `workdir`/config.json; writes nothing.

  Returns the allowed differences (to log and record), [] for a new run.
  Raises RunConfigMismatch when the workdir holds checkpoints and a fixed
  field differs. With no checkpoint there is no state to misread: every
  change is allowed (the old config is still kept in the history)."""
  path = fileio.join(workdir, "config.json")
  if not fileio.exists(path):
    return []
  changes = differences(fileio.read_json(path), _as_dict(config))
  # A key only one side has is a code update adding or removing a field with
  # its default: it cannot be compared, so it is allowed (and logged).
  fixed = [c for c in changes if is_fixed(c[0]) and _ABSENT not in (c[1], c[2])]
  if fixed and saved_steps:
    lines = "\n".join(f"  {k}: {old!r} → {new!r}" for k, old, new in fixed)
    raise RunConfigMismatch(
        f"{workdir} holds a run (checkpoints up to step {max(saved_steps)}) whose config "
        f"differs in fields that fix the saved state's shapes or meaning:\n{lines}\n"
        f"Nothing was written. To resume that run, use its config (see {path}). To start a "
        f"new run, use a new --workdir; to start it from this run's weights (and its "
        f"tokenizer), add --config.init_from=workdir:{workdir}.")
  return changes


def record(config, workdir: str, changes: list, saved_steps: list[int]) -> None:
  """Writes config.json; when a resume changed it, first keeps the old one
  as config.<newest step>.json (or config.<step>.<n>.json if taken)."""
  path = fileio.join(workdir, "config.json")
  if changes:
    step = max(saved_steps) if saved_steps else 0
    kept, n = fileio.join(workdir, f"config.{step}.json"), 1
    while fileio.exists(kept):
      kept, n = fileio.join(workdir, f"config.{step}.{n}.json"), n + 1
    fileio.copy(path, kept)
    log.info("config changed on resume at step %d (old config kept as %s): %s", step, kept,
             "; ".join(f"{k}: {old!r} → {new!r}" for k, old, new in changes))
  fileio.write_text(path, config.to_json_best_effort(indent=1))


def check_tokenizer(workdir: str, tokenizer_file: str, saved_steps: list[int]) -> None:
  """The run's tokenizer copy in `workdir` must be the file this run
  tokenizes with: the same vocabulary size with other ids trains on nonsense
  without a shape error."""
  import os
  copy = fileio.join(workdir, os.path.basename(tokenizer_file))
  if not saved_steps or not fileio.exists(copy):
    return
  from etils import epath
  if epath.Path(copy).read_bytes() != epath.Path(tokenizer_file).read_bytes():
    raise RunConfigMismatch(
        f"{workdir} holds a run trained with the tokenizer {copy}, but this run would use "
        f"{tokenizer_file}, which differs: the same token ids would mean other words. Nothing "
        f"was written. Resume with the run's data (or set --config.data.tokenizer={copy}), or "
        f"start a new run in a new workdir (--config.init_from=workdir:{workdir} starts it "
        f"from this run's weights and tokenizer).")
