"""A training run's directory (its workdir): the files it holds and their
rules. Everyone who reads or writes a workdir — the trainer, monitoring,
`alip_jax.load`, evaluate, export, score, the lease — asks here; no other
module joins a path under a workdir (tests/test_layout.py checks).

  <workdir>/config.json            the run's config; config.<S>.json: one a resume replaced
           tokenizer.model | .json the run's tokenizer copy (so loading needs no data)
           checkpoints/<step>/     Orbax steps (checkpointing/)
           eval.json               {step: metrics} of the trainer's evaluations (EvalLog)
           eval/<step>.json, .md   `python -m alip_jax.evaluate`'s results
           metrics.jsonl, tensorboard/, profile/, wandb_run.json   monitoring.py
           data/                   the data directory when config.data.dir is unset
           lease                   who is training here (checkpointing/lease.py)

The config contract: a resume compares its config with config.json *before
writing anything*. Fields that give the state its shapes or meaning (FIXED)
must be equal: a difference is an error listing each `old → new` and the ways
out. Others (steps, evaluation, logging, learning rate, mesh, data paths,
precision) may change, each change logged; the config replaced is kept as
`config.<S>.json`, S the newest checkpoint step then.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile

import ml_collections

from alip_jax import config_check, fileio, hub

log = logging.getLogger(__name__)

CONFIG = "config.json"
EVAL_LOG = "eval.json"
# The trainer copies one into its workdir; our exports hold both (the
# SentencePiece model is the exact one), transformers' CLIP tokenizer.json.
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")
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


# ---- Paths.

def checkpoint_dir(workdir: str) -> str:
  """Orbax writes gs:// paths itself; it refuses relative local ones, so
  `--workdir runs/x` is made absolute."""
  if not fileio.is_remote(workdir):
    workdir = os.path.abspath(workdir)
  return fileio.join(workdir, "checkpoints")


def _file(name: str):
  return lambda workdir: fileio.join(workdir, name)


# workdir → path, for the files the docstring lists.
config_file = _file(CONFIG)
eval_log_file = _file(EVAL_LOG)
eval_dir = _file("eval")
metrics_file = _file("metrics.jsonl")
tensorboard_dir = _file("tensorboard")
profile_dir = _file("profile")
wandb_run_file = _file("wandb_run.json")
lease_file = _file("lease")


def data_dir(config, workdir: str) -> str:
  """`config.data.dir`, else <workdir>/data; a local path (Grain reads
  ArrayRecord shards from local files)."""
  path = config.data.dir or fileio.join(workdir, "data")
  if fileio.is_remote(path):
    raise ValueError(
        f"data directory {path}: Grain reads ArrayRecord shards from a local path. Mount the "
        f"bucket with gcsfuse (launch/tpu_pod.sh does with DATA_BUCKET=) or copy the shards to "
        f"local disk, and set --config.data.dir to that path.")
  return path


def saved_steps(workdir: str) -> list[int]:
  """The finished checkpoint steps, ascending; whether one reads is
  checkpointing.restore_newest_readable's question."""
  return steps_in(checkpoint_dir(workdir))


def steps_in(directory: str) -> list[int]:
  """The finished steps in a checkpoint directory, ascending (Orbax writes
  a step under a temporary name and renames it when done)."""
  from etils import epath
  path = epath.Path(directory)
  if not path.exists():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


# ---- What a path is: a checkpoint step, a workdir.

def split_step(path: str) -> tuple[str, int | None]:
  """`<workdir>/checkpoints/<step>` → (workdir, step); else (path, None)."""
  path = str(path).rstrip("/")
  parent, _, name = path.rpartition("/")
  if parent.endswith("/checkpoints") and name.isdigit():
    return parent.rpartition("/")[0], int(name)
  return path, None


def training_workdir(path: str) -> str | None:
  """The training workdir `path` is or is a checkpoint step of, else None (a
  file; an HF CLIP or open_clip directory, whose config.json is not ours)."""
  workdir, step = split_step(path)
  if step is not None:
    return workdir
  config, open_clip = config_file(workdir), fileio.join(workdir, "open_clip_config.json")
  ours = fileio.exists(config) and fileio.read_json(config).get("model_type") != "clip"
  return workdir if ours and not fileio.exists(open_clip) else None


# ---- config.json and its history.

def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config, validated (an older one: new fields' defaults in)."""
  path = config_file(workdir)
  if not fileio.exists(path):
    raise FileNotFoundError(f"{workdir} holds no {CONFIG}: not a training workdir")
  return config_check.validate(ml_collections.ConfigDict(fileio.read_json(path)))


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


def check_resume(config, workdir: str, steps: list[int]) -> list:
  """Compares `config` with config.json; writes nothing. `steps`: the
  saved checkpoint steps.

  Returns the allowed differences (to log and record), [] for a new run.
  Raises RunConfigMismatch when the workdir holds checkpoints and a fixed
  field differs. With no checkpoint there is no state to misread: every
  change is allowed (the old config is still kept in the history)."""
  path = config_file(workdir)
  if not fileio.exists(path):
    return []
  changes = differences(fileio.read_json(path), json.loads(config.to_json_best_effort()))
  # A key only one side has is a code update adding or removing a field with
  # its default: it cannot be compared, so it is allowed (and logged).
  fixed = [c for c in changes if is_fixed(c[0]) and _ABSENT not in (c[1], c[2])]
  if fixed and steps:
    lines = "\n".join(f"  {k}: {old!r} → {new!r}" for k, old, new in fixed)
    raise RunConfigMismatch(
        f"{workdir} holds a run (checkpoints up to step {max(steps)}) whose config "
        f"differs in fields that fix the saved state's shapes or meaning:\n{lines}\n"
        f"Nothing was written. To resume that run, use its config (see {path}). To start a "
        f"new run, use a new --workdir; to start it from this run's weights (and its "
        f"tokenizer), add --config.init_from=workdir:{workdir}.")
  return changes


def record(config, workdir: str, changes: list, steps: list[int]) -> None:
  """Writes config.json; when a resume changed it, first keeps the old one
  as config.<newest step>.json (or config.<step>.<n>.json if taken)."""
  path = config_file(workdir)
  if changes:
    step = max(steps) if steps else 0
    kept, n = fileio.join(workdir, f"config.{step}.json"), 1
    while fileio.exists(kept):
      kept, n = fileio.join(workdir, f"config.{step}.{n}.json"), n + 1
    fileio.copy(path, kept)
    log.info("config changed on resume at step %d (old config kept as %s): %s", step, kept,
             "; ".join(f"{k}: {old!r} → {new!r}" for k, old, new in changes))
  fileio.write_text(path, config.to_json_best_effort(indent=1))


# ---- The tokenizer: which file a run uses, and its copy in the workdir.

def find_tokenizer(directory: str) -> str | None:
  """The tokenizer file in `directory` (a workdir, an HF or open_clip one);
  from a bucket, a local copy (the tokenizers read local files)."""
  found = next((fileio.join(directory, f) for f in TOKENIZER_FILES
                if fileio.exists(fileio.join(directory, f))), None)
  if found and fileio.is_remote(found):
    local = os.path.join(tempfile.mkdtemp(prefix="alip_tokenizer_"), os.path.basename(found))
    fileio.copy(found, local)
    return local
  return found


def tokenizer_file(config, data_directory: str) -> str:
  """`config.data.tokenizer` when set; else the tokenizer of the weights the
  run starts from (`init_from='hf:DIR'`, 'open_clip:DIR', 'hf-hub:…': DIR's
  tokenizer file, which must exist; `'workdir:W'`: W's copy); else the data's
  tokenizer.model."""
  explicit = config.data.tokenizer
  if explicit:
    return explicit
  init_kind, init_path = hub.resolve_init_from(config.init_from)
  if init_kind in ("hf", "open_clip", "workdir"):
    found = find_tokenizer(init_path)
    if found is None:
      raise FileNotFoundError(
          f"init_from={config.init_from!r}: {init_path} holds no tokenizer "
          f"({' or '.join(TOKENIZER_FILES)}), and the data's tokenizer.model is not "
          f"the one these weights were trained with (the same vocabulary size would hide the "
          f"mismatch). Copy the model's tokenizer file into {init_path}, or set "
          f"--config.data.tokenizer=FILE if you mean another one.")
    return found
  return os.path.join(data_directory, "tokenizer.model")


def _tokenizer_copy(workdir: str, used: str) -> str:
  return fileio.join(workdir, os.path.basename(used))


def check_tokenizer(workdir: str, used: str, steps: list[int]) -> None:
  """The run's tokenizer copy must be the file this run tokenizes with
  (`used`): the same vocabulary size with other ids trains on nonsense
  without a shape error. `steps`: the saved checkpoint steps."""
  copy = _tokenizer_copy(workdir, used)
  if not steps or not fileio.exists(copy):
    return
  from etils import epath
  if epath.Path(copy).read_bytes() != epath.Path(used).read_bytes():
    raise RunConfigMismatch(
        f"{workdir} holds a run trained with the tokenizer {copy}, but this run would use "
        f"{used}, which differs: the same token ids would mean other words. Nothing "
        f"was written. Resume with the run's data (or set --config.data.tokenizer={copy}), or "
        f"start a new run in a new workdir (--config.init_from=workdir:{workdir} starts it "
        f"from this run's weights and tokenizer).")


def keep_tokenizer(workdir: str, used: str, steps: list[int]) -> None:
  """Copies `used` into the workdir (so `alip_jax.load` needs no data
  directory), unless a resume already has it (`check_tokenizer`: equal)."""
  copy = _tokenizer_copy(workdir, used)
  if not (steps and fileio.exists(copy)):
    fileio.copy(used, copy)


# ---- eval.json.

def read_eval_log(workdir: str) -> dict:
  """{str(step): metrics} of the trainer's evaluations; {} if none."""
  return fileio.read_json(eval_log_file(workdir), {})


class EvalLog:
  """Every evaluation's metrics: in eval.json (kept across resumes), in the
  monitor's sinks (TensorBoard, W&B: `monitor.write_eval`) and as one log
  line of the headline numbers."""

  def __init__(self, workdir: str, monitor, is_main: bool):
    self.path = eval_log_file(workdir)
    self.entries = read_eval_log(workdir)
    self.monitor, self.is_main = monitor, is_main

  def write(self, step: int, metrics: dict) -> dict:
    self.entries[str(step)] = metrics
    self.monitor.write_eval(step, metrics)
    if self.is_main:
      fileio.write_json(self.path, self.entries)
    log.info("eval step %d: %s", step, " ".join(
        f"{k}={v:.4f}" for k, v in metrics.items()
        if "R@" in k or k.endswith(("/top1", "/accuracy"))))
    return metrics
