"""The filter as Apache Beam pipelines (`python -m alip_jax.filter`): the
same bytes as filtering.filter_split, with a worker's memory independent of
the number of records. Three pipelines, each one line into one sink:

  1 Scan    score files ─► row batches ─► one combiner → .filter/scan.json:
            rows, passes per --keep rule, smallest and largest index, and for
            --top_fraction the threshold: the sort key (COLUMN, then S_tc,
            then the smaller index) ranked round(F·rows) from the top among
            the rows the rules keep (QuantileAtRank).
  2 Select  score files ─► batches cut by index block (BLOCK records) ─►
            GroupByKey(block) ─► the block's kept indices, sorted, in
            .filter/kept-BBBBBB.npy (a record scored twice is an error) ─►
            one combiner → .filter/select.json: kept per block, kept and
            dropped per meta.noise_kind.
  3 Write   output shard ids ─► the shard's range of kept ranks (the cut of
            np.array_split, as filtering.write_filtered) → its indices from
            the block files → the records read from the split by index,
            decoded and written in order (records.write_shard, atomic).

Records never pass through a shuffle. No pipeline uses metrics, tagged
outputs, side inputs or finish_bundle, so all three run on Beam's DaskRunner
(tools/beam_runners.py). `.filter/` is made afresh by every run and removed
at the end, so an interrupted filter re-runs from the start into the same
bytes. Paths are local (or a file system mounted on every worker).
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import shutil

import apache_beam as beam
import numpy as np

from alip_jax import fileio
from alip_jax.curation import filtering
from alip_jax.curation.top_rank import QuantileAtRank, sort_keys
from alip_jax.data import records
from alip_jax.tools import beam_runners

log = logging.getLogger(__name__)

BATCH = 65536            # score rows read at a time
BLOCK = 1 << 20          # records per index block (one group of pipeline 2)
QUANTILE_EPSILON = 1e-4  # rank error bound of the threshold, as a fraction of the rows…
QUANTILE_MAX_ROWS = 10**9  # …while the rule-passing rows are at most this many


def score_files(scores_dir: str) -> list[str]:
  paths = sorted(glob.glob(os.path.join(scores_dir, "scores-*-of-*.parquet")))
  if not paths:
    raise FileNotFoundError(f"no scores-*.parquet in {scores_dir}: run python -m alip_jax.score "
                            f"first")
  return paths


def batches(path: str, batch_size: int = BATCH):
  """{column: numpy array} per `batch_size` rows of one scores file (the dtypes of
  scoring.read_scores, so that rules compare alike)."""
  import pyarrow.parquet as pq
  for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size,
                                                 columns=list(filtering.COLUMNS)):
    yield {c: batch.column(c).to_numpy(zero_copy_only=False) for c in filtering.COLUMNS}


def rule_keep(batch: dict, rules) -> tuple[np.ndarray, list[int]]:
  keep = np.ones(len(batch["index"]), bool)
  passes = []
  for _, mask in filtering.rule_masks(batch, rules):
    passes.append(int(mask.sum()))
    keep &= mask
  return keep, passes


# ---- 1 Scan

def scan_file(path: str, rules, by: str | None, batch_size: int):
  """→ per batch (rows, passes per rule, smallest, largest index, sort keys
  of the rule-passing rows or None)."""
  for batch in batches(path, batch_size):
    if not len(batch["index"]):
      continue
    keep, passes = rule_keep(batch, rules)
    keys = sort_keys({c: batch[c][keep] for c in (by, "s_tc", "index")}, by) if by else None
    yield len(keep), passes, int(batch["index"].min()), int(batch["index"].max()), keys


class Scan(beam.CombineFn):
  """scan_file's batches → scan.json's contents."""

  def __init__(self, num_rules: int, top_fraction: float | None):
    self.num_rules, self.top_fraction = num_rules, top_fraction
    self.quantiles = QuantileAtRank.create(2, epsilon=QUANTILE_EPSILON,
                                           max_num_elements=QUANTILE_MAX_ROWS)

  def create_accumulator(self):
    return [0, [0] * self.num_rules, None, -1, 0, self.quantiles.create_accumulator()]

  def add_input(self, acc, batch):
    rows, passes, smallest, largest, keys = batch
    acc[0] += rows
    acc[1] = [a + b for a, b in zip(acc[1], passes)]
    acc[2] = smallest if acc[2] is None else min(acc[2], smallest)
    acc[3] = max(acc[3], largest)
    if keys is not None:
      acc[4] += len(keys)
      self.quantiles._add_inputs(acc[5], keys)  # pylint: disable=protected-access
    return acc

  def merge_accumulators(self, accumulators):
    accumulators = list(accumulators)
    merged = self.create_accumulator()
    for acc in accumulators:
      if acc[0]:  # (a runner may merge empty accumulators)
        merged[:5] = self.add_input(merged, (*acc[:4], None))[:5]
        merged[4] += acc[4]
    merged[5] = self.quantiles.merge_accumulators([a[5] for a in accumulators])
    return merged

  def extract_output(self, acc):
    rows, passes, smallest, largest, candidates, state = acc
    scan = {"rows": rows, "passes": passes, "smallest": smallest, "largest": largest,
            "candidates": candidates}
    if self.top_fraction is not None:
      count = int(round(self.top_fraction * rows))
      scan["top"] = min(count, candidates)
      if 0 < count < candidates:
        scan["threshold"], scan["exact"] = self.quantiles.element_at(state, candidates - count)
        scan["threshold"] = str(scan["threshold"])  # JSON: a 192-bit int
    return scan


# ---- 2 Select

def select_file(path: str, rules, by: str | None, scan: dict, batch_size: int, block_size: int):
  """→ (block, (file, indices, kept mask, {kind: [kept, dropped]})) per
  batch and index block."""
  for batch in batches(path, batch_size):
    keep, _ = rule_keep(batch, rules)
    if by is not None:
      if scan["top"] == 0:
        keep[:] = False
      elif "threshold" in scan:
        threshold = int(scan["threshold"])
        keep &= np.array([k >= threshold for k in sort_keys(batch, by)], bool)
    blocks = batch["index"] // block_size
    for block in np.unique(blocks):
      rows = blocks == block
      kinds = collections.defaultdict(lambda: [0, 0])
      for kind, k in zip(batch["noise_kind"][rows], keep[rows]):
        kinds[kind or "unknown"][0 if k else 1] += 1
      yield int(block), (path, batch["index"][rows], keep[rows], dict(kinds))


def write_block(element, work: str):
  """(block, slices) → {"kept": {block: n}, "kinds": …}; the kept indices
  sorted in work/kept-BBBBBB.npy."""
  block, slices = element
  indices = np.concatenate([s[1] for s in slices])
  unique, counts = np.unique(indices, return_counts=True)
  if (counts > 1).any():
    twice = int(unique[counts > 1][0])
    files = sorted({s[0] for s in slices if twice in s[1]})
    raise ValueError(f"record {twice} is scored more than once (in {', '.join(files)}): keep "
                     f"one scores directory per split (re-score into an empty --out)")
  kept = np.sort(np.concatenate([s[1][s[2]] for s in slices]).astype(np.int64))
  np.save(os.path.join(work, f"kept-{block:06d}.npy"), kept)
  kinds = collections.Counter()
  for *_, slice_kinds in slices:
    for kind, (k, d) in slice_kinds.items():
      kinds[(kind, 0)] += k
      kinds[(kind, 1)] += d
  return {"kept": {block: len(kept)}, "kinds": kinds}


def merge_selected(parts) -> dict:
  kept, kinds = {}, collections.Counter()
  for part in parts:
    kept.update(part["kept"])
    kinds.update(part["kinds"])
  return {"kept": kept, "kinds": kinds}


# ---- 3 Write

def write_range(element, data_dir: str, split: str, out: str, work: str, blocks: list):
  """(shard, shards, first rank, end rank) → the shard file."""
  shard, num_shards, start, stop = element
  source = records.ShardedSource(records.split_files(data_dir, split).files)

  def indices():
    for block, first, n in blocks:
      if first < stop and first + n > start:
        kept = np.load(os.path.join(work, f"kept-{block:06d}.npy"))
        yield from kept[max(0, start - first):stop - first]

  path = os.path.join(out, records.shard_name(split, shard, num_shards))
  return records.write_shard(path, (records.decode(source[int(i)]) for i in indices()))


def write_json_to(data, path: str) -> None:
  fileio.write_json(path, data)


def _run(beam_args, build):
  pipeline = beam_runners.new_pipeline(beam_runners.pipeline_options(list(beam_args)))
  build(pipeline)
  beam_runners.run(pipeline, (ValueError,))


def filter_split(scores_dir: str, data_dir: str, split: str, out: str, keep: str = "",
                 top_fraction: float | None = None, by: str | None = None, shards: int = 4,
                 beam_args=("--direct_running_mode=in_memory",), batch_size: int = BATCH,
                 block_size: int = BLOCK) -> dict:
  """filtering.filter_split's command on Beam; returns filter.json's contents.
  `beam_args`: Beam pipeline options (the runner); batch_size and
  block_size change the work's grain, never the output."""
  rules = filtering.parse_rules(keep)
  filtering.check_top(top_fraction, by)
  files = score_files(scores_dir)
  num_records = len(records.ShardedSource(records.split_files(data_dir, split).files))
  top_by = by if top_fraction is not None else None
  work = os.path.join(out, ".filter")
  shutil.rmtree(work, ignore_errors=True)  # what an interrupted run left
  os.makedirs(work)

  _run(beam_args, lambda p: (
      p | "ScoreFiles" >> beam.Create(files)
      | "Scan" >> beam.FlatMap(scan_file, rules, top_by, batch_size)
      | "Combine" >> beam.CombineGlobally(Scan(len(rules), top_fraction)).without_defaults()
      | "Write" >> beam.Map(write_json_to, os.path.join(work, "scan.json"))))
  scan = fileio.read_json(os.path.join(work, "scan.json"), None) or {  # no score rows
      "rows": 0, "passes": [0] * len(rules), "candidates": 0, "top": 0}
  if scan["rows"]:
    if scan["smallest"] < 0:
      raise ValueError(f"{scores_dir} scores record {scan['smallest']}: indices start at 0")
    filtering.check_indices(scores_dir, data_dir, split, scan["largest"], num_records)
  if "threshold" in scan:
    log.info("top %s by %s: threshold %s (%s)", top_fraction, by, scan["threshold"],
             "exact" if scan["exact"] else f"rank within ±{QUANTILE_EPSILON * scan['candidates']:.0f}")

  _run(beam_args, lambda p: (
      p | "ScoreFiles" >> beam.Create(files)
      | "Select" >> beam.FlatMap(select_file, rules, top_by, scan, batch_size, block_size)
      | "ByBlock" >> beam.GroupByKey()
      | "WriteBlocks" >> beam.Map(write_block, work)
      | "Combine" >> beam.CombineGlobally(merge_selected).without_defaults()
      | "Write" >> beam.Map(lambda s, path: write_json_to({
          "kept": sorted(s["kept"].items()),
          "kinds": sorted([*k, n] for k, n in s["kinds"].items())}, path),
          os.path.join(work, "select.json"))))
  selected = fileio.read_json(os.path.join(work, "select.json"), {"kept": [], "kinds": []})

  blocks, total = [], 0
  for block, n in selected["kept"]:
    if n:
      blocks.append((block, total, n))
      total += n
  ranges = filtering.shard_ranges(total, shards)
  _run(beam_args, lambda p: (
      p | "Shards" >> beam.Create([(s, len(ranges), a, b) for s, (a, b) in enumerate(ranges)])
      | "WriteShards" >> beam.Map(write_range, data_dir, split, out, work, blocks)))
  shutil.rmtree(work)

  rule_stats = {filtering.rule_name(*rule): {"pass": n, "fail": scan["rows"] - n}
                for rule, n in zip(rules, scan["passes"])}
  if top_fraction is not None:
    rule_stats[filtering.top_name(top_fraction, by)] = {
        "pass": scan["top"], "fail": scan["candidates"] - scan["top"]}
  by_kind = collections.defaultdict(lambda: {"kept": 0, "dropped": 0})
  for kind, column, n in selected["kinds"]:
    by_kind[kind]["kept" if column == 0 else "dropped"] += n
  stats = filtering.summary(scores_dir, data_dir, split, keep, top_fraction, by, num_records,
                            scan["rows"], total, rule_stats, by_kind)
  filtering.write_counts(data_dir, out, split, total, stats)
  return stats
