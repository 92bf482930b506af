"""When do ALIP's gates pay? Two tables on the embedded corpus (docs/RESULTS.md).

  python -m alip_jax.experiments.gating --workdir runs/gating --table filtering
  python -m alip_jax.experiments.gating --workdir runs/gating --table ablation
  python -m alip_jax.experiments.gating --workdir runs/gating --table ablation --steps_factor 3

filtering: CLIP on raw text (configs/demo.py:clip_raw, same steps and seed)
trained on (a) all training data, (b) the records whose LCG weight W^s ≥ 0.5
under the ALIP demo run, (c) the same number of records ranked by CLIP score
(image–raw-text cosine of that run), (d) an oracle that drops the records
whose raw text is `mismatched` (the corpus's ground truth). Scoring and
filtering go through alip_jax.score / alip_jax.filter's libraries.

ablation: the paper's Table 4 on this corpus: bi-path (no gates), + sample
gate, + pair gates, full ALIP, and (e) the sample gate on the raw-text path
only (`loss.alip.sample_gate_paths='raw'`); --steps_factor multiplies every
row's steps. --rows picks rows. Finished runs are reused (each row is a
training workdir under --workdir); evaluation is retrieval on the test split.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

import alip_jax
from alip_jax import console, train
from alip_jax.configs import demo as demo_configs
from alip_jax.curation import filtering, scoring
from alip_jax.data import records
from alip_jax.tools import synthetic

_WORKDIR = flags.DEFINE_string("workdir", "runs/gating", "Data, runs, scores and tables go here.")
_TABLE = flags.DEFINE_enum("table", "filtering", ["filtering", "ablation"], "Which table.")
_ROWS = flags.DEFINE_list("rows", None, "Only these rows (default: all of the table).")
_STEPS_FACTOR = flags.DEFINE_integer("steps_factor", 1, "Multiply every row's steps.")

# name → (label, demo variant, config overrides)
ABLATION = {
    "bipath": ("bi-path, no gates", "bipath", {}),
    "sample_gate": ("+ sample gate (LCG)", "alip",
                    {"loss.alip.raw_pair_gate": False, "loss.alip.caption_pair_gate": False}),
    "pair_gates": ("+ pair gates (DCG)", "alip", {"loss.alip.sample_gate": False}),
    "alip": ("full ALIP (both gates)", "alip", {}),
    "sample_gate_raw": ("(e) full ALIP, sample gate on the raw path only", "alip",
                        {"loss.alip.sample_gate_paths": "raw"}),
}
# name → (label, filter arguments; None = all data)
FILTERING = {
    "all": ("(a) all data", None),
    "lcg": ("(b) LCG weight W^s ≥ 0.5", dict(keep="w_sample>=0.5")),
    "clip_score": ("(c) CLIP score, same kept fraction as (b)", dict(by="clip_score")),
    "oracle": ("(d) oracle: drop ground-truth mismatched", dict(keep="noise_kind!=mismatched")),
}


def run_row(workdir, name, variant, overrides, data_dir, synthetic):
  config = demo_configs.get_config(variant)
  config.data.dir, config.data.synthetic = data_dir, synthetic
  config.train.steps *= _STEPS_FACTOR.value
  for key, value in overrides.items():  # "loss.alip.sample_gate" → config.loss.alip.sample_gate
    *path, field = key.split(".")
    target = config
    for part in path:
      target = target[part]
    target[field] = value
  suffix = f"_x{_STEPS_FACTOR.value}" if _STEPS_FACTOR.value > 1 else ""
  start = time.time()
  result = train.train_and_evaluate(config, os.path.join(workdir, name + suffix))
  metrics = result.eval
  return {"steps": result.step, "seconds": round(time.time() - start, 1),
          **{k: metrics[k] for k in ("i2t_R@1", "t2i_R@1", "i2t_R@10", "t2i_R@10")}}


def _retrieval_cells(row):
  return " | ".join(f"{100 * row[k]:.1f}" for k in ("i2t_R@1", "t2i_R@1", "i2t_R@10", "t2i_R@10"))


def filtering_table(workdir, rows):
  data_dir = os.path.join(workdir, "data")
  synthetic.prepare(demo_configs.get_config("alip"), workdir)  # the corpus, if missing
  scores_dir = os.path.join(workdir, "scores")
  if not os.path.exists(os.path.join(scores_dir, "summary.json")):
    run_row(workdir, "alip", "alip", {}, data_dir, True)  # the model that scores
    scoring.score_split(alip_jax.load(os.path.join(workdir, "alip")),
                        records.split_files(data_dir, "train").files, scores_dir)
  results, lcg_fraction = [], None
  for name in rows:
    label, args = FILTERING[name]
    row = {"name": name, "label": label}
    if args is None:
      row.update(run_row(workdir, "clip_raw", "clip_raw", {}, data_dir, True))
    else:
      out = os.path.join(workdir, f"data_{name}")
      if name == "clip_score":  # the same kept fraction as (b)
        if lcg_fraction is None:
          lcg_fraction = filtering.select(scoring.read_scores(scores_dir), filtering.parse_rules(
              FILTERING["lcg"][1]["keep"]))[0].mean()
        args = dict(args, top_fraction=float(lcg_fraction))
      stats = filtering.filter_split(scores_dir, data_dir, "train", out, **args)
      if name == "lcg":
        lcg_fraction = stats["kept"] / stats["scored"]
      row["filter"] = stats
      row.update(run_row(workdir, f"clip_raw_{name}", "clip_raw", {}, out, False))
    results.append(row)
  lines = ["| CLIP (raw text) trained on | kept | matched kept | partial kept | mismatched kept "
           "| I→T R@1 | T→I R@1 | I→T R@10 | T→I R@10 |", "|---|---|---|---|---|---|---|---|---|"]
  for row in results:
    kinds = row.get("filter", {}).get("noise_kind", {})
    share = lambda k: (f"{kinds[k]['kept'] / (kinds[k]['kept'] + kinds[k]['dropped']):.1%}"
                       if k in kinds else "100%")
    kept = f"{row['filter']['kept_fraction']:.1%}" if "filter" in row else "100%"
    lines.append(f"| {row['label']} | {kept} | {share('matched')} | {share('partial')} "
                 f"| {share('mismatched')} | {_retrieval_cells(row)} |")
  return results, lines


def ablation_table(workdir, rows):
  data_dir = os.path.join(workdir, "data")
  synthetic.prepare(demo_configs.get_config("alip"), workdir)
  results = []
  for name in rows:
    label, variant, overrides = ABLATION[name]
    results.append({"name": name, "label": label,
                    **run_row(workdir, name, variant, overrides, data_dir, True)})
  lines = ["| objective | steps | I→T R@1 | T→I R@1 | I→T R@10 | T→I R@10 |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r['label']} | {r['steps']} | {_retrieval_cells(r)} |" for r in results]
  return results, lines


def main(argv):
  del argv
  console.setup_logging()
  workdir = os.path.abspath(_WORKDIR.value)
  table = FILTERING if _TABLE.value == "filtering" else ABLATION
  rows = _ROWS.value or list(table)
  unknown = set(rows) - set(table)
  if unknown:
    raise app.UsageError(f"--rows {sorted(unknown)}: the {_TABLE.value} rows are {list(table)}")
  make = filtering_table if _TABLE.value == "filtering" else ablation_table
  start = time.time()
  results, lines = make(workdir, rows)
  base = demo_configs.get_config()
  footer = (f"{base.train.steps * _STEPS_FACTOR.value} steps × batch {base.train.batch_size}, "
            f"seed {base.seed}, per row; retrieval on the test split's clean captions; "
            f"wall time {(time.time() - start) / 60:.1f} min")
  text = "\n".join(lines) + "\n\n" + footer + "\n"
  print("\n" + text)
  name = f"{_TABLE.value}" + (f"_x{_STEPS_FACTOR.value}" if _STEPS_FACTOR.value > 1 else "")
  if _ROWS.value:
    name += "-" + "-".join(rows)
  with open(os.path.join(workdir, name + ".md"), "w") as f:
    f.write(text)
  with open(os.path.join(workdir, name + ".json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
