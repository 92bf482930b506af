"""Filtering by the gates, with seeds, in one regime of the grid.

  python -m alip_jax.experiments.regimes --workdir runs/regimes --filtering

For each seed s: the grid's ALIP run of that seed in REGIME scores the
training split (alip_jax.score's library); CLIP on raw text (seed s) is then
trained on (a) all data, (b) the records with W^s ≥ 0.5, (c) the same number
of records ranked by CLIP score (the image–raw-text cosine of the same ALIP
run), (d) the oracle: ground-truth mismatched alt-texts dropped. Rows are
`filter_all`, `filter_lcg`, `filter_clip_score`, `filter_oracle`; each
filtered row is compared paired with `filter_all` (regimes_report.CONTRASTS).
"""

from __future__ import annotations

import json
import os

import alip_jax
from alip_jax.curation import filtering, scoring
from alip_jax.data import records

REGIME = "generic/heavy"
# name → filter arguments (None: all data); "clip_score" keeps lcg's fraction.
FILTERS = {"all": None, "lcg": dict(keep="w_sample>=0.5"), "clip_score": dict(by="clip_score"),
           "oracle": dict(keep="noise_kind!=mismatched")}


def filtered_data(regime_dir: str, seed: int) -> dict:
  """{filter name: (data dir, filter stats or None)} for `seed`, scoring and
  filtering what is missing. Needs the grid's ALIP run of that seed."""
  data_dir = os.path.join(regime_dir, "data")
  alip_dir = os.path.join(regime_dir, f"alip_x1_seed{seed}")
  if not os.path.isdir(os.path.join(alip_dir, "checkpoints")):
    raise FileNotFoundError(f"{alip_dir}: the grid's ALIP run of seed {seed} in {REGIME} "
                            f"scores the data; run the grid first")
  scores_dir = os.path.join(regime_dir, f"scores_seed{seed}")
  if not os.path.exists(os.path.join(scores_dir, "summary.json")):
    scoring.score_split(alip_jax.load(alip_dir), records.split_files(data_dir, "train").files,
                        scores_dir)
  out, lcg_fraction = {"all": (data_dir, None)}, None
  for name in ("lcg", "clip_score", "oracle"):
    args = dict(FILTERS[name])
    if name == "clip_score":
      args["top_fraction"] = lcg_fraction
    target = os.path.join(regime_dir, f"data_{name}_seed{seed}")
    if os.path.exists(os.path.join(target, "filter.json")):  # a resumed run
      with open(os.path.join(target, "filter.json")) as f:
        stats = json.load(f)
    else:
      stats = filtering.filter_split(scores_dir, data_dir, "train", target, **args)
    if name == "lcg":
      lcg_fraction = stats["kept"] / stats["scored"]
    out[name] = (target, stats)
  return out
