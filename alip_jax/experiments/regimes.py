"""When do ALIP's gates pay? A grid of data regimes × objectives × seeds.

  python -m alip_jax.experiments.regimes --workdir runs/regimes          # run / resume the grid
  python -m alip_jax.experiments.regimes --workdir runs/regimes --report # tables + heatmap only

Each regime is a corpus of the embedded generator (tools/synthetic.py) with
its knobs set (docs/DATA.md, "Data regimes"): how much of a scene the
synthetic caption names, how much the alt-text carries that the caption
lacks, and how noisy the alt-texts are. Every regime has the same scenes'
distribution, the same sizes and the same test queries' content; its test
split carries each query in three styles (the captioner's, web alt-text's,
and a "human" template family neither training text uses).

Every cell (regime × row × seed) trains the demo's towers for the same steps
and batch, then embeds the regime's test split with `alip_jax.load` and
keeps each query's rank (docs/results/regimes_ranks.npz), from which the
report computes R@1/5/10 and mean rank with paired bootstrap intervals
(experiments/stats.py). ALIP rows also record how well the trained gates
tell matched alt-texts from mismatched and partial ones (AUC of W^s and of
S_tc on the training split, against the corpus's own noise kinds).

The grid, budgets and settings are fixed in docs/RESULTS.md, "When do
ALIP's gates pay?", before the first run; change them there, not here
after seeing results. Results go to docs/results/regimes.json one cell at
a time, so an interrupted grid resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np
from absl import app, flags

import alip_jax
from alip_jax import console, mesh as mesh_lib, state as state_lib, train
from alip_jax.configs import demo as demo_configs
from alip_jax.data import pipeline, records
from alip_jax.evaluation import gates, retrieval
from alip_jax.experiments import regimes_filtering, regimes_report
from alip_jax.tools import synthetic

log = logging.getLogger(__name__)

_WORKDIR = flags.DEFINE_string("workdir", "runs/regimes", "Corpora and training runs go here.")
_RESULTS = flags.DEFINE_string("results", "docs/results", "regimes.json, the ranks and the heatmap.")
_REPORT = flags.DEFINE_bool("report", False, "Only rebuild the tables and heatmap from --results.")
_REGIMES = flags.DEFINE_list("regimes", None, "Only these regimes (default: the grid's).")
_ROWS = flags.DEFINE_list("rows", None, "Only these rows (default: the grid's).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds 0..S-1 per regime and row.")
_STEPS_FACTOR = flags.DEFINE_integer("steps_factor", 1, "Multiply the steps (a longer budget).")
_FILTERING = flags.DEFINE_bool("filtering", False, "Filtering with seeds (regimes_filtering.py) "
                               "instead of the grid's rows.")

# The grid (fixed before the first run; docs/RESULTS.md). Two axes:
# caption specificity (rich = the demo's captioner, generic = a captioner
# that names a third of the attributes and hallucinates, while the alt-text
# names size and place) × alt-text noise (web = the demo's 50/25/25 mix of
# matched/partial/mismatched, heavy = 20/20/60).
CAPTIONS = {
    "rich": dict(caption_specificity=1.0, caption_hallucination_rate=0.0, alt_text_detail=0.0),
    "medium": dict(caption_specificity=0.6, caption_hallucination_rate=0.05, alt_text_detail=0.5),
    "generic": dict(caption_specificity=0.3, caption_hallucination_rate=0.1, alt_text_detail=1.0),
}
NOISE = {"web": (0.5, 0.25, 0.25), "heavy": (0.2, 0.2, 0.6)}
REGIMES = {f"{c}/{n}": dict(CAPTIONS[c], noise_mix=NOISE[n]) for c in CAPTIONS for n in NOISE}
# name → (label, demo variant, config overrides)
ROWS = {
    "clip_caption": ("CLIP, captions only", "clip_caption", {}),
    "bipath": ("bi-path, no gates", "bipath", {}),
    "alip": ("ALIP (official)", "alip", {}),
    "alip_raw": ("ALIP, sample gate on the raw path only", "alip",
                 {"sample_gate_paths": "raw"}),
    "clip_raw": ("CLIP, raw text only", "clip_raw", {}),
    # Not in the default grid (--rows): the running means' start.
    "alip_first_batch": ("ALIP, means from the first batch", "alip",
                         {"init_from_first_batch": True}),
}
GRID_ROWS = ("clip_caption", "bipath", "alip", "alip_raw")
# Where the budget allows, after the grid (--rows clip_raw): CLIP on raw text.
STEPS = 200              # per row; × --steps_factor
NUM_TRAIN = 12_000
NUM_TEST = 5_000         # evaluated as 5 galleries of 1,000 images (COCO-1k style)
FOLD = 1_000
QUERY_STYLES = ("human", "caption", "alt")


def corpus_config(regime: str) -> synthetic.CorpusConfig:
  return synthetic.CorpusConfig(num_train=NUM_TRAIN, num_test=NUM_TEST,
                                query_styles=QUERY_STYLES, **REGIMES[regime])


def cell_config(regime_dir: str, row: str, seed: int):
  _, variant, overrides = ROWS[row]
  config = demo_configs.get_config(variant)
  config.seed = seed
  config.data.dir = os.path.join(regime_dir, "data")
  config.data.synthetic = False  # built here, with the regime's knobs
  config.data.eval_split = "val"  # the trainer's own end-of-run check; the grid's test is below
  config.train.steps = STEPS * _STEPS_FACTOR.value
  for key, value in overrides.items():
    config.loss.alip[key] = value
  return config


def query_ranks(run, data_dir: str) -> dict:
  """{style: {"i2t": ranks [N], "t2i": ranks [N]}} on the test split, each
  query ranked within its gallery of FOLD images and their FOLD queries;
  images of the same scene count as positives (retrieval.py's rule)."""
  source = records.ShardedSource(records.split_files(data_dir, "test").files)
  images, groups, texts = [], [], {s: [] for s in QUERY_STYLES}
  for index in range(len(source)):
    rec = pipeline.decode_record(source[index], min_side=run.image_size)
    if "error" in rec:
      raise ValueError(f"test record {index} of {data_dir}: {rec['error']}; rebuild the corpus")
    images.append(pipeline.eval_image(rec["image"], run.image_size))
    groups.append(rec["meta"]["scene"])
    for style in QUERY_STYLES:
      texts[style].append(rec["meta"]["queries"][style])
  image_emb = run.encode_image(np.stack(images))
  _, group_ids = np.unique(np.asarray(groups), return_inverse=True)
  out = {}
  for style in QUERY_STYLES:
    text_emb = run.encode_text(texts[style])
    i2t, t2i = [], []
    for start in range(0, len(images), FOLD):
      part = slice(start, start + FOLD)
      similarity = image_emb[part] @ text_emb[part].T
      positive = group_ids[part][:, None] == group_ids[part][None, :]
      i2t.append(retrieval.ranks(similarity, positive))
      t2i.append(retrieval.ranks(similarity.T, positive.T))
    out[style] = {"i2t": np.concatenate(i2t), "t2i": np.concatenate(t2i)}
  return out


def gate_aucs(run, config) -> dict:
  """How well the trained gates tell the noise kinds apart (training split)."""
  mesh = run.mesh
  _, encode_text = state_lib.make_encoders(run.model, mesh)
  files = records.split_files(config.data.dir, config.data.train_split).files
  weights, s_tc, kinds = gates.lcg_weights(
      lambda t: encode_text(run.params, t), files, run.tokenizer, run.gate_state["h_tc"],
      config.loss.alip.gamma_sample, config.eval.batch_size, mesh_lib.batch_sharding(mesh))
  return {f"{name}_{kind}": gates.lcg_auc(values, kinds, kind)
          for name, values in (("ws", weights), ("stc", s_tc)) for kind in ("mismatched", "partial")}


def regime_dir_of(regime: str) -> str:
  return os.path.join(os.path.abspath(_WORKDIR.value), regime.replace("/", "_"))


def run_cell(regime: str, row: str, seed: int, data_dir: str | None = None,
             name: str | None = None) -> tuple[dict, dict]:
  """Trains and evaluates one cell; `data_dir`/`name` train `row`'s objective
  on other data (a filtered copy) under another row name."""
  regime_dir = regime_dir_of(regime)
  config = cell_config(regime_dir, row, seed)
  config.data.dir = data_dir or config.data.dir
  run_dir = os.path.join(regime_dir, f"{name or row}_x{_STEPS_FACTOR.value}_seed{seed}")
  start = time.time()
  result = train.train_and_evaluate(config, run_dir)
  run = alip_jax.load(run_dir)
  ranks = query_ranks(run, os.path.join(regime_dir, "data"))
  cell = {"steps": result.step, "seconds": None, "val": result.eval}
  if ROWS[row][1] == "alip":
    cell["gates"] = gate_aucs(run, config)
    cell["means"] = {k: float(v) for k, v in run.gate_state.items()}
  cell["seconds"] = round(time.time() - start, 1)
  return cell, ranks


def _save_npz(arrays: dict, path: str):
  with open(path, "wb") as f:
    np.savez_compressed(f, **arrays)


def _dump_json(value, path: str):
  with open(path, "w") as f:
    json.dump(value, f, indent=1)


def _atomic_write(path: str, write):
  tmp = path + ".tmp"
  write(tmp)
  os.replace(tmp, path)


def run_grid():
  results_dir = _RESULTS.value
  os.makedirs(results_dir, exist_ok=True)
  json_path, ranks_path = regimes_report.paths(results_dir)
  done = regimes_report.load(results_dir)
  ranks = dict(np.load(ranks_path)) if os.path.exists(ranks_path) else {}
  regimes = _REGIMES.value or list(REGIMES)
  if _FILTERING.value:
    regimes = [regimes_filtering.REGIME]
  rows = _ROWS.value or list(GRID_ROWS)
  for unknown, known, what in ((set(regimes) - set(REGIMES), REGIMES, "regimes"),
                               (set(rows) - set(ROWS), ROWS, "rows")):
    if unknown:
      raise app.UsageError(f"--{what} {sorted(unknown)}: the {what} are {list(known)}")
  budget = f"x{_STEPS_FACTOR.value}"
  done.setdefault("settings", {}).setdefault(budget, {
      "steps": STEPS * _STEPS_FACTOR.value, "batch": demo_configs.get_config().train.batch_size,
      "num_train": NUM_TRAIN, "num_test": NUM_TEST, "fold": FOLD})
  done["regimes"] = {name: REGIMES[name] for name in REGIMES}
  cells = done.setdefault("cells", {})
  workdir = os.path.abspath(_WORKDIR.value)
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  # Seed-major: after each seed every cell has a value, so a grid cut short
  # still compares every row in every regime.
  for seed in range(_SEEDS.value):
    for regime in regimes:
      data_dir = os.path.join(workdir, regime.replace("/", "_"), "data")
      synthetic.ensure_built(data_dir, corpus_config(regime))
      if _FILTERING.value:
        todo = {f"filter_{name}": data for name, data in
                regimes_filtering.filtered_data(regime_dir_of(regime), seed).items()}
      else:
        todo = {row: (None, None) for row in rows}
      for row, (data_dir, filter_stats) in todo.items():
        key = f"{regime}|{row}|{budget}|{seed}"
        if key in cells:
          continue
        log.info("cell %s", key)
        if _FILTERING.value:
          cell, cell_ranks = run_cell(regime, "clip_raw", seed, data_dir, row)
          cell["filter"] = filter_stats
        else:
          cell, cell_ranks = run_cell(regime, row, seed)
        cells[key] = cell
        for style, by_direction in cell_ranks.items():
          for direction, values in by_direction.items():
            ranks[f"{key}|{style}|{direction}"] = values.astype(np.uint16)
        _atomic_write(ranks_path, lambda p: _save_npz(ranks, p))
        _atomic_write(json_path, lambda p: _dump_json(done, p))
        print(f"cell {key}: {cell['seconds']} s", flush=True)


def main(argv):
  del argv
  console.setup_logging()
  if not _REPORT.value:
    run_grid()
  print(regimes_report.report(_RESULTS.value))


if __name__ == "__main__":
  app.run(main)
