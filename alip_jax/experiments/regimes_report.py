"""The regimes grid's tables and heatmap, computed from docs/results/ alone.

  regimes.json        settings, regimes, and per cell "REGIME|ROW|xF|SEED":
                      steps, seconds, the trainer's val metrics, and for ALIP
                      rows the gates' AUCs and final running means
  regimes_ranks.npz   "REGIME|ROW|xF|SEED|STYLE|DIRECTION" → each query's rank

Every figure is a mean over seeds and over both directions' queries (image→
text and text→image pooled: 2 × 5,000 queries per seed), with a paired
bootstrap interval over seeds × queries (experiments/stats.py). Rows are
compared on the seeds both have finished.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np

from alip_jax.experiments import stats

METRICS = ("R@1", "R@5", "R@10", "mean_rank")
ALIP, ALIP_VARIANTS = "alip", ("alip", "alip_raw", "alip_first_batch")
# (label, row, baseline): the differences each regime's table reports.
CONTRASTS = (("ALIP − bi-path", "alip", "bipath"),
             ("ALIP − CLIP-caption", "alip", "clip_caption"),
             ("ALIP − CLIP-raw", "alip", "clip_raw"),
             ("ALIP − best other", "alip", "best_other"),
             ("ALIP(raw gate) − bi-path", "alip_raw", "bipath"),
             ("ALIP(raw gate) − ALIP", "alip_raw", "alip"),
             ("ALIP(first batch) − ALIP", "alip_first_batch", "alip"),
             ("CLIP-raw on W^s ≥ 0.5 − on all", "filter_lcg", "filter_all"),
             ("CLIP-raw on CLIP-score top − on all", "filter_clip_score", "filter_all"),
             ("CLIP-raw on oracle − on all", "filter_oracle", "filter_all"),
             ("CLIP-raw on W^s ≥ 0.5 − on CLIP-score top", "filter_lcg", "filter_clip_score"))


def paths(results_dir: str) -> tuple[str, str]:
  return (os.path.join(results_dir, "regimes.json"),
          os.path.join(results_dir, "regimes_ranks.npz"))


def load(results_dir: str) -> dict:
  json_path, _ = paths(results_dir)
  if not os.path.exists(json_path):
    return {}
  with open(json_path) as f:
    return json.load(f)


class Grid:
  """Per-query values of the finished cells, looked up by regime, row,
  budget, style and metric as [seeds, queries] arrays."""

  def __init__(self, results_dir: str):
    self.meta = load(results_dir)
    _, ranks_path = paths(results_dir)
    self.ranks = dict(np.load(ranks_path)) if os.path.exists(ranks_path) else {}
    self.cells = self.meta.get("cells", {})

  def seeds(self, regime, row, budget) -> list[int]:
    return sorted(int(k.split("|")[3]) for k in self.cells
                  if k.startswith(f"{regime}|{row}|{budget}|"))

  def values(self, regime, row, budget, style, metric, seeds) -> np.ndarray:
    per_seed = []
    for seed in seeds:
      key = f"{regime}|{row}|{budget}|{seed}|{style}"
      pooled = np.concatenate([self.ranks[f"{key}|i2t"], self.ranks[f"{key}|t2i"]])
      per_seed.append(stats.per_query_metrics(pooled[None].astype(np.int64))[metric][0])
    return np.stack(per_seed).astype(np.float64)

  def rows(self, regime, budget) -> list[str]:
    found = {k.split("|")[1] for k in self.cells if k.startswith(f"{regime}|")
             and k.split("|")[2] == budget}
    order = ("clip_caption", "clip_raw", "bipath", "alip", "alip_raw", "alip_first_batch",
             "filter_all", "filter_lcg", "filter_clip_score", "filter_oracle")
    return [r for r in order if r in found] + sorted(found - set(order))

  def row_interval(self, regime, row, budget, style, metric) -> stats.Interval:
    seeds = self.seeds(regime, row, budget)
    return stats.bootstrap(self.values(regime, row, budget, style, metric, seeds))

  def row_mean(self, regime, row, budget, style, metric) -> float:
    seeds = self.seeds(regime, row, budget)
    return float(self.values(regime, row, budget, style, metric, seeds).mean())

  def best_other(self, regime, budget, style) -> str | None:
    """The non-ALIP row with the highest mean R@1 (a selection made on the
    same data, so ALIP − best other leans against ALIP)."""
    others = [r for r in self.rows(regime, budget)
              if r not in ALIP_VARIANTS and not r.startswith("filter_")]
    if not others:
      return None
    return max(others, key=lambda r: self.row_mean(regime, r, budget, style, "R@1"))

  def contrast(self, regime, row, baseline, budget, style, metric="R@1"):
    """(baseline name, paired interval, seeds) or None when either is missing."""
    if baseline == "best_other":
      baseline = self.best_other(regime, budget, style)
    rows = self.rows(regime, budget)
    if baseline is None or row not in rows or baseline not in rows:
      return None
    seeds = sorted(set(self.seeds(regime, row, budget)) & set(self.seeds(regime, baseline, budget)))
    if not seeds:
      return None
    a = self.values(regime, row, budget, style, metric, seeds)
    b = self.values(regime, baseline, budget, style, metric, seeds)
    return baseline, stats.bootstrap(a, b), seeds

  def regimes(self) -> list[str]:
    return [r for r in self.meta.get("regimes", {}) if any(k.startswith(f"{r}|") for k in self.cells)]

  def budgets(self) -> list[str]:
    return sorted({k.split("|")[2] for k in self.cells}, key=lambda b: int(b[1:]))


def _pct(interval: stats.Interval) -> str:
  return f"{100 * interval.mean:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _diff(interval: stats.Interval) -> str:
  text = f"{100 * interval.mean:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
  return f"**{text}**" if interval.resolved else text


def regime_tables(grid: Grid, budget: str, style: str) -> list[str]:
  lines = []
  for regime in grid.regimes():
    rows = grid.rows(regime, budget)
    if not rows:
      continue
    lines += [f"#### {regime} ({style} queries, {budget})", "",
              "| row | seeds | R@1 | R@5 | R@10 | mean rank |", "|---|---|---|---|---|---|"]
    for row in rows:
      r1 = grid.row_interval(regime, row, budget, style, "R@1")
      mean = {m: grid.row_mean(regime, row, budget, style, m) for m in METRICS[1:]}
      lines.append(f"| {row} | {len(grid.seeds(regime, row, budget))} | {_pct(r1)} "
                   f"| {100 * mean['R@5']:.1f} | {100 * mean['R@10']:.1f} "
                   f"| {mean['mean_rank']:.1f} |")
    lines += ["", "| difference (R@1, points) | vs | 95 % interval | seeds |", "|---|---|---|---|"]
    for label, row, baseline in CONTRASTS:
      got = grid.contrast(regime, row, baseline, budget, style)
      if got:
        name, interval, seeds = got
        lines.append(f"| {label} | {name} | {_diff(interval)} | {len(seeds)} |")
    lines.append("")
  return lines


def map_table(grid: Grid, budget: str, styles) -> list[str]:
  """One line per regime: ALIP − bi-path and ALIP − best other (R@1
  points, paired 95 % interval; bold = resolved), per query style."""
  head = " | ".join(f"{style}: ALIP − bi-path | {style}: ALIP − best other" for style in styles)
  lines = [f"| regime | {head} |", "|---" * (1 + 2 * len(styles)) + "|"]
  for regime in grid.regimes():
    cells = []
    for style in styles:
      for baseline in ("bipath", "best_other"):
        got = grid.contrast(regime, ALIP, baseline, budget, style)
        cells.append("—" if not got else _diff(got[1]) + (
            f" ({got[0]})" if baseline == "best_other" else ""))
    lines.append(f"| {regime} | " + " | ".join(cells) + " |")
  return lines


def gate_table(grid: Grid, budget: str) -> list[str]:
  lines = ["| regime | seeds | AUC W^s mismatched | AUC W^s partial | AUC S_tc mismatched "
           "| AUC S_tc partial | H_tc at the end |", "|---|---|---|---|---|---|---|"]
  for regime in grid.regimes():
    cells = [c for k, c in grid.cells.items()
             if k.startswith(f"{regime}|alip|{budget}|") and "gates" in c]
    if not cells:
      continue
    mean = lambda key: np.mean([c["gates"][key] for c in cells])
    h_tc = np.mean([c["means"]["h_tc"] for c in cells])
    lines.append(f"| {regime} | {len(cells)} | {mean('ws_mismatched'):.3f} | {mean('ws_partial'):.3f} "
                 f"| {mean('stc_mismatched'):.3f} | {mean('stc_partial'):.3f} | {h_tc:.3f} |")
  return lines


def heatmap(grid: Grid, budget: str, styles, path: str) -> None:
  """ALIP − bi-path and ALIP − best other (R@1 points) per regime, a panel
  per style; resolved cells framed and starred."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  captions = list(dict.fromkeys(r.split("/")[0] for r in grid.meta["regimes"]))
  noises = list(dict.fromkeys(r.split("/")[1] for r in grid.meta["regimes"]))
  contrasts = [(label, baseline) for label, _, baseline in CONTRASTS[:4:3]]  # bi-path, best other
  fig, axes = plt.subplots(len(contrasts), len(styles), squeeze=False,
                           figsize=(3.4 * len(styles), 3.3 * len(contrasts)))
  for (row, (label, baseline)), (col, style) in itertools.product(enumerate(contrasts),
                                                                  enumerate(styles)):
    ax = axes[row][col]
    values, texts = np.full((len(captions), len(noises)), np.nan), {}
    for i, c in enumerate(captions):
      for j, n in enumerate(noises):
        got = grid.contrast(f"{c}/{n}", ALIP, baseline, budget, style)
        if not got:
          continue
        name, interval, _ = got
        values[i, j] = 100 * interval.mean
        texts[i, j] = (f"{100 * interval.mean:+.1f}{' *' if interval.resolved else ''}\n"
                       f"[{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
                       + (f"\nvs {name}" if baseline == "best_other" else ""), interval.resolved)
    limit = max(1.0, np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0)
    ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
    for (i, j), (text, resolved) in texts.items():
      dark = abs(values[i, j]) > 0.55 * limit
      ax.text(j, i, text, ha="center", va="center", fontsize=8,
              color="white" if dark else "black")
      if resolved:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5))
    ax.set_xticks(range(len(noises)), [f"noise: {n}" for n in noises], fontsize=8)
    ax.set_yticks(range(len(captions)), [f"captions: {c}" for c in captions], fontsize=8)
    ax.set_title(f"{label}\n(R@1 points, {style} queries)", fontsize=9)
  fig.suptitle(f"ALIP's gates by data regime ({budget} budget; * = 95 % interval excludes 0)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def report(results_dir: str, styles=("human", "caption", "alt")) -> str:
  """The markdown of every table; writes the heatmap PNG beside the json."""
  grid = Grid(results_dir)
  if not grid.cells:
    return f"no finished cells in {results_dir}"
  lines = []
  for budget in grid.budgets():
    settings = grid.meta["settings"][budget]
    lines += [f"### Budget {budget}: {settings['steps']} steps × batch {settings['batch']}, "
              f"{settings['num_train']} training triplets, {settings['num_test']} test images "
              f"in galleries of {settings['fold']}", ""]
    lines += ["#### The map: does ALIP beat the other rows? (R@1 points)", ""]
    lines += map_table(grid, budget, styles) + [""]
    for style in styles:
      lines += regime_tables(grid, budget, style)
    lines += ["#### How well the trained gates tell the noise kinds apart", ""]
    lines += gate_table(grid, budget) + [""]
    png = os.path.join(results_dir, f"regimes_heatmap_{budget}.png")
    heatmap(grid, budget, styles, png)
    lines += [f"Heatmap: {png}", ""]
  text = "\n".join(lines)
  with open(os.path.join(results_dir, "regimes.md"), "w") as f:
    f.write(text)
  return text
