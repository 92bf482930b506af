"""Evaluate a checkpoint: retrieval, zero-shot classification, linear probe.

  python -m alip_jax.evaluate --workdir runs/demo/alip \
      --tasks retrieval,zeroshot,linear_probe \
      --zeroshot cifar10:test --linear_probe cifar10:train:test \
      --tfds_data_dir ~/tensorflow_datasets

--workdir: a training workdir (newest readable checkpoint, or --step N; a
missing step lists those there); or --checkpoint: anything `alip_jax.load`
reads (a checkpoint step directory, whose workdir's config then gives the
defaults and --out; an HF CLIP directory, an OpenAI state dict, with --out
for the results). Nothing is created in the workdir but eval/.
Writes `<out>/<step>.json` (default out: <workdir>/eval) and the same as a
markdown table in `<out>/<step>.md`, and prints the table. Embeddings run on
all devices (data parallel); every item is evaluated exactly once.
Defaults for the datasets come from the workdir's config (config.eval).
"""

from __future__ import annotations

import json
import time

from absl import app, flags
import jax
import ml_collections

from alip_jax import console, fileio, mesh as mesh_lib, rundir
from alip_jax.evaluation import evaluators, suites, tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (local or gs://).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Or: a path alip_jax.load reads.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
_TASKS = flags.DEFINE_list("tasks", ["retrieval"], "retrieval, zeroshot, linear_probe.")
_RETRIEVAL_DATA = flags.DEFINE_string(
    "retrieval_data", None, "ArrayRecord directory with the retrieval split "
    "(default: the workdir config's data directory).")
_RETRIEVAL_SPLIT = flags.DEFINE_string("retrieval_split", None, "Default: config.data.eval_split.")
_ZEROSHOT = flags.DEFINE_list("zeroshot", None, "TFDS NAME:SPLIT, e.g. cifar10:test.")
_LINEAR_PROBE = flags.DEFINE_list("linear_probe", None, "TFDS NAME:TRAIN:TEST.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where the TFDS sets are prepared.")
_CLASSNAMES = flags.DEFINE_string("classnames", None, "Class-name file (one per line).")
_TEMPLATES = flags.DEFINE_string("templates", None, "Prompt template file (default: "
                                 "alip_jax/evaluation/prompts/templates.txt).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images (or texts) per forward pass.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 0, "Evaluate only the first N images (0 = all).")
_OUT = flags.DEFINE_string("out", None, "Results directory (default: <workdir>/eval).")
_BENCHMARK = flags.DEFINE_enum(
    "benchmark", None, list(suites.SUITES), "A suite of published benchmarks (core: zero-shot "
    "ImageNet-1k, CIFAR-10/100; COCO and Flickr30k 5-caption retrieval), each set that is "
    "prepared; --tasks then runs only when given.")
_FLICKR30K_DIR = flags.DEFINE_string(
    "flickr30k_dir", None, "Karpathy's dataset_flickr30k.json beside flickr30k-images/ "
    "(default: <tfds_data_dir>/flickr30k).")


def evaluate(model, tasks_to_run, eval_config, data_dir: str | None, data_split: str) -> dict:
  """{task: metrics} for `model` (an alip_jax.LoadedModel), through the
  trainer's evaluators (evaluation/evaluators.py)."""
  # The loaded model embeds with its own params, padding to a few bucket sizes.
  encoders = evaluators.Encoders(image=lambda _, x, n: model.encode_image(x, n),
                                 text=lambda _, t, n: model.encode_text(t, n))
  results = {}
  for task in tasks_to_run:
    start = time.time()
    if task == "retrieval":
      if not data_dir:
        raise ValueError("retrieval needs --retrieval_data (an ArrayRecord directory)")
      retrieval = evaluators.Retrieval.from_split(encoders, data_dir, data_split, model.tokenizer,
                                                  model.image_size, eval_config.batch_size)
      results["retrieval"] = {**retrieval.run(model.params),
                              "skipped_records": retrieval.data.skipped}
    elif task in ("zeroshot", "linear_probe"):
      found = evaluators.tfds_evaluators(encoders, eval_config, model.image_size, which=(task,))
      if not found:
        raise ValueError(f"--tasks {task} needs --{task} (e.g. "
                         f"{'cifar10:test' if task == 'zeroshot' else 'cifar10:train:test'})")
      results.update({ev.key: ev.run(model.params) for ev in found})
    else:
      raise ValueError(f"unknown task {task!r}: use retrieval, zeroshot, linear_probe")
    print(f"{task}: {time.time() - start:.1f} s", flush=True)
  return results


def main(argv):
  del argv
  import alip_jax
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    raise app.UsageError("give one of --workdir and --checkpoint")
  path = _WORKDIR.value or _CHECKPOINT.value
  mesh = mesh_lib.make_mesh(dict(data=-1))
  from alip_jax import checkpointing
  try:
    model = alip_jax.load(path, step=_STEP.value, mesh=mesh)
  except (FileNotFoundError, checkpointing.NoReadableCheckpoint) as e:
    raise SystemExit(f"error: {e}") from e  # one line, no traceback

  # Defaults from the training config (a workdir, or the one a checkpoint
  # step belongs to), overridden by flags.
  workdir = _WORKDIR.value or rundir.training_workdir(_CHECKPOINT.value)
  config = rundir.read_config(workdir) if workdir else None
  eval_config = ml_collections.ConfigDict(dict(
      batch_size=_BATCH_SIZE.value, zeroshot="", linear_probe="", tfds_data_dir="",
      classnames="", templates="", max_items=_MAX_ITEMS.value))
  if config is not None:
    for key in ("zeroshot", "linear_probe", "tfds_data_dir", "classnames", "templates"):
      eval_config[key] = config.eval[key]
  for key, flag in (("zeroshot", _ZEROSHOT), ("linear_probe", _LINEAR_PROBE),
                    ("tfds_data_dir", _TFDS_DATA_DIR), ("classnames", _CLASSNAMES),
                    ("templates", _TEMPLATES)):
    if flag.value is not None:
      eval_config[key] = ",".join(flag.value) if isinstance(flag.value, list) else flag.value
  data_dir = _RETRIEVAL_DATA.value or (
      rundir.data_dir(config, workdir) if config is not None else None)
  split = _RETRIEVAL_SPLIT.value or (config.data.eval_split if config is not None else "test")

  run_tasks = _TASKS.value if not _BENCHMARK.value or flags.FLAGS["tasks"].present else []
  results = evaluate(model, run_tasks, eval_config, data_dir, split)
  if _BENCHMARK.value:
    found, skipped = suites.run_suite(
        suites.SUITES[_BENCHMARK.value], model.encode_image, model.encode_text, model.tokenizer,
        model.image_size, _BATCH_SIZE.value, eval_config.tfds_data_dir, _FLICKR30K_DIR.value or "",
        _MAX_ITEMS.value)
    results.update(found)
    if skipped:
      results["benchmark_skipped"] = skipped
  step = model.step if model.step is not None else 0
  results = {"step": step, "checkpoint": path, **results}
  if jax.process_index() == 0:
    out = _OUT.value or (rundir.eval_dir(workdir) if workdir else None)
    table = tasks.markdown_table(results)
    print(table)
    if out:
      fileio.makedirs(out)
      fileio.write_json(fileio.join(out, f"{step}.json"), results)
      fileio.write_text(fileio.join(out, f"{step}.md"),
                        f"# Evaluation of {path} at step {step}\n\n{table}")
      print(f"results in {fileio.join(out, f'{step}.json')}")
    else:
      print(json.dumps(results, indent=1))


def run():
  """The `alip-eval` console script."""
  console.run_absl(main, __name__)


if __name__ == "__main__":
  run()
