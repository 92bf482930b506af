"""The embedded demo: four objectives, same data, steps and seed, one table.

  python -m alip_jax.demo --workdir runs/demo

Rows: (a) CLIP on raw web text, (b) CLIP on synthetic captions, (c) both
paths without gates, (d) ALIP. Columns: zero-shot retrieval R@1 (both
directions) on the test split's clean captions; zero-shot classification
and linear-probe accuracy on `alip_synthetic_colors` (the held-out images
labelled by the colour of their largest object, read as a TFDS data source:
alip_jax/tools/tfds_synthetic.py); and for ALIP the ROC AUC of its sample gate
(LCG weight) at telling mismatched raw texts from matched ones on the
training data. Re-running resumes/reuses finished runs.

At the end it prints each row's wall time and where the time went, phase by
phase (start-up, compile, steps, loader wait, checkpoint, eval): wall, CPU
user and kernel time, minor page faults (alip_jax/phase_times.py; also in
results.json). JAX's persistent compilation cache in <workdir>/xla_cache
lets the rows share the programs they have in common (the evaluation
encoders) and a re-run compile nothing.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags
import jax

import alip_jax
from alip_jax import console, mesh as mesh_lib, phase_times, state as state_lib, train
from alip_jax.configs import demo as demo_configs
from alip_jax.data import records
from alip_jax.tools import synthetic, tfds_synthetic
from alip_jax.evaluation import gates

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where data and the four runs go.")
_STEPS = flags.DEFINE_integer("steps", None, "Override config.train.steps for every row.")
_VARIANTS = flags.DEFINE_list(
    "variants", "clip_raw,clip_caption,bipath,alip",
    "Rows to run (configs/demo.py variants); the default is the README's table. "
    "Also: siglip, softclip, mix, uniclip.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "xla_cache",
    "JAX's persistent compilation cache, relative to --workdir ('' = none).")

LABELS = {"clip_raw": "(a) CLIP, raw text only", "clip_caption": "(b) CLIP, captions only",
          "bipath": "(c) raw + caption, no gates", "alip": "(d) ALIP",
          "siglip": "SigLIP, both paths", "softclip": "SoftCLIP (reconstructed), both paths",
          "mix": "caption/raw mixing (p = 0.5)",
          "uniclip": "UniCLIP (reconstructed), two views + both texts"}


def gate_auc(workdir, config) -> dict:
  """LCG weight AUCs on the training split for a finished ALIP run, read
  back from its workdir (params and gate means of its last checkpoint)."""
  mesh = mesh_lib.make_mesh(config.mesh)
  run = alip_jax.load(workdir, mesh=mesh)
  _, encode_text = state_lib.make_encoders(run.model, mesh)
  files = records.split_files(config.data.dir, config.data.train_split).files
  weights, _, kinds = gates.lcg_weights(
      lambda t: encode_text(run.params, t), files, run.tokenizer, run.gate_state["h_tc"],
      config.loss.alip.gamma_sample, config.eval.batch_size, mesh_lib.batch_sharding(mesh))
  return {"auc_mismatched": gates.lcg_auc(weights, kinds, "mismatched"),
          "auc_partial": gates.lcg_auc(weights, kinds, "partial"),
          "num_scored": int(len(weights)),
          "mean_weight": {k: float(weights[kinds == k].mean()) for k in
                          ("matched", "partial", "mismatched")}}


def main(argv):
  del argv
  console.setup_logging()
  root = os.path.abspath(_WORKDIR.value)  # a directory of runs, not one run
  data_dir, tfds_dir = os.path.join(root, "data"), os.path.join(root, "tfds")
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, _CACHE.value))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  start = time.time()
  phases = phase_times.PhaseTimes()
  rows = []
  for variant in _VARIANTS.value:
    label = LABELS.get(variant, variant)
    config = demo_configs.get_config(variant)
    config.data.dir = data_dir
    if not rows:  # the corpus, then its held-out images as a TFDS set
      with phases.measure("corpus"):
        synthetic.prepare(config, root)
        tfds_synthetic.prepare(data_dir, tfds_dir)
    config.eval.zeroshot = f"{tfds_synthetic.NAME}:test"
    config.eval.linear_probe = f"{tfds_synthetic.NAME}:train:test"
    config.eval.tfds_data_dir = tfds_dir
    if _STEPS.value:
      config.train.steps = _STEPS.value
    run_start = time.time()
    run_dir = os.path.join(root, variant)
    result = train.train_and_evaluate(config, run_dir)
    metrics = result.eval
    row = {"variant": variant, "label": label, "steps": result.step,
           "i2t_R@1": metrics["i2t_R@1"], "t2i_R@1": metrics["t2i_R@1"],
           "i2t_R@10": metrics["i2t_R@10"], "t2i_R@10": metrics["t2i_R@10"],
           "zeroshot_top1": metrics[f"zeroshot/{tfds_synthetic.NAME}/top1"],
           "linear_probe": metrics[f"linear_probe/{tfds_synthetic.NAME}/accuracy"],
           "phases": result.phases}
    phases.add_dict(result.phases)
    if variant == "alip":
      with phases.measure("gate AUC"):
        row["gate"] = gate_auc(run_dir, config)
    row["seconds"] = round(time.time() - run_start, 1)
    rows.append(row)

  total = time.time() - start
  lines = ["| objective | I→T R@1 | T→I R@1 | I→T R@10 | T→I R@10 | zero-shot top-1 "
           "| linear probe | LCG AUC (mismatched / partial) |",
           "|---|---|---|---|---|---|---|---|"]
  for row in rows:
    gate = row.get("gate")
    auc = f"{gate['auc_mismatched']:.3f} / {gate['auc_partial']:.3f}" if gate else "—"
    lines.append(f"| {row['label']} | {100 * row['i2t_R@1']:.1f} | {100 * row['t2i_R@1']:.1f} "
                 f"| {100 * row['i2t_R@10']:.1f} | {100 * row['t2i_R@10']:.1f} "
                 f"| {100 * row['zeroshot_top1']:.1f} | {100 * row['linear_probe']:.1f} | {auc} |")
  table = "\n".join(lines)
  steps = rows[0]["steps"]
  footer = (f"{steps} steps × batch {demo_configs.get_config().train.batch_size}, seed "
            f"{demo_configs.get_config().seed}, per row; retrieval: test split, clean captions; "
            f"zero-shot / probe: {tfds_synthetic.NAME} (6 colours); "
            f"total wall time {total / 60:.1f} min")
  timing = ("wall time per row: " + ", ".join(
      f"{row['variant']} {row['seconds']:.0f} s" for row in rows) + "\n\nwhere it went (all "
      "rows; CPU time of all threads):\n" + phase_times.markdown_table(phases.as_dict()))
  print("\n" + table + "\n\n" + footer + "\n\n" + timing)
  name = "results" if _VARIANTS.value == _VARIANTS.default else "results-" + "-".join(
      _VARIANTS.value)
  with open(os.path.join(root, name + ".md"), "w") as f:
    f.write(table + "\n\n" + footer + "\n")
  with open(os.path.join(root, name + ".json"), "w") as f:
    json.dump({"rows": rows, "total_seconds": round(total, 1), "phases": phases.as_dict()}, f,
              indent=1)


def run():
  """The `alip-demo` console script."""
  console.run_absl(main, __name__)


if __name__ == "__main__":
  run()
