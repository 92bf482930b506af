"""Selecting records by their gate scores and writing them as a new split
(the library under `python -m alip_jax.filter`; see alip_jax/filter.py)."""

from __future__ import annotations

import collections
import operator
import os
import re
import shutil

import numpy as np

from alip_jax import fileio
from alip_jax.checkpointing import lease
from alip_jax.data import records
from alip_jax.curation import provenance
from alip_jax.curation.scoring import COLUMNS, read_scores

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
        ">": operator.gt, "<": operator.lt}
_RULE = re.compile(r"^\s*(\w+)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
_TEXT_COLUMNS = ("key", "noise_kind")


def parse_rules(text: str) -> list[tuple[str, str, object]]:
  """'w_sample>=0.5,noise_kind!=mismatched' → [(column, op, value), …]."""
  rules = []
  for part in (p for p in text.split(",") if p.strip()):
    match = _RULE.match(part)
    if not match or match.group(1) not in COLUMNS:
      raise ValueError(f"--keep {part!r}: write COLUMN OP VALUE with OP one of "
                       f"{' '.join(_OPS)} and COLUMN one of {', '.join(COLUMNS)}")
    column, op, value = match.groups()
    if column not in _TEXT_COLUMNS:
      try:
        value = float(value)
      except ValueError:
        raise ValueError(f"--keep {part!r}: {column} is a number, {value!r} is not") from None
    elif op not in ("==", "!="):
      raise ValueError(f"--keep {part!r}: {column} is text; use == or !=")
    rules.append((column, op, value))
  return rules


def rule_masks(table: dict, rules) -> list[tuple[str, np.ndarray]]:
  """(rule's name in filter.json, pass mask) per rule, over a table or a
  batch of its rows (compared in the column's own dtype)."""
  return [(rule_name(column, op, value), _OPS[op](table[column], value))
          for column, op, value in rules]


def rule_name(column: str, op: str, value) -> str:
  return f"{column}{op}{value}"


def check_top(top_fraction: float | None, by: str | None) -> None:
  if top_fraction is not None and (
      not 0 < top_fraction <= 1 or by not in COLUMNS or by in _TEXT_COLUMNS):
    raise ValueError(f"--top_fraction must be in (0, 1] and --by a score column, got "
                     f"{top_fraction} and {by!r}")


def top_name(top_fraction: float, by: str) -> str:
  return f"top {top_fraction} by {by}"


def select(table: dict, rules=(), top_fraction: float | None = None,
           by: str | None = None) -> tuple[np.ndarray, dict]:
  """Returns (keep mask over the table's rows, stats per rule)."""
  keep = np.ones(len(table["key"]), bool)
  stats = {}
  for name, passes in rule_masks(table, rules):
    stats[name] = {"pass": int(passes.sum()), "fail": int((~passes).sum())}
    keep &= passes
  check_top(top_fraction, by)
  if top_fraction is not None:
    candidates = np.flatnonzero(keep)
    count = int(round(top_fraction * len(table["key"])))
    order = np.lexsort((table["index"][candidates], -table["s_tc"][candidates],
                        -table[by][candidates]))
    top = np.zeros_like(keep)
    top[candidates[order[:count]]] = True
    stats[top_name(top_fraction, by)] = {"pass": int(top.sum()), "fail": int(keep.sum() - top.sum())}
    keep = top
  return keep, stats


def write_filtered(data_dir: str, split: str, out: str, kept_indices: np.ndarray,
                   shards: int) -> int:
  """Writes the records at `kept_indices` (sorted) of `split` to `out`."""
  source = records.ShardedSource(records.split_files(data_dir, split).files)
  os.makedirs(out, exist_ok=True)
  written = 0
  ranges = shard_ranges(len(kept_indices), shards)
  for s, (start, stop) in enumerate(ranges):
    path = os.path.join(out, records.shard_name(split, s, len(ranges)))
    written += records.write_shard(path, (records.decode(source[int(i)])
                                          for i in kept_indices[start:stop]))
  return written


def shard_ranges(num_kept: int, shards: int) -> list[tuple[int, int]]:
  """[start, stop) of each output shard over the kept records: at most
  `shards`, at least one (np.array_split's cut: the first ones one longer)."""
  num = max(1, min(shards, num_kept))
  sizes = [num_kept // num + (s < num_kept % num) for s in range(num)]
  ends = np.cumsum([0, *sizes]).tolist()
  return list(zip(ends[:-1], ends[1:]))


def copy_rest(data_dir: str, out: str, split: str) -> dict:
  """Copies the tokenizer and every other split's shards; returns their counts."""
  for name in ("tokenizer.model", "tokenizer.json"):
    if os.path.exists(os.path.join(data_dir, name)):
      shutil.copy(os.path.join(data_dir, name), os.path.join(out, name))
  counts = fileio.read_json(os.path.join(data_dir, "counts.json"), {}).get("splits", {})
  copied = {}
  for other, num in counts.items():
    if other == split:
      continue
    for path in records.split_files(data_dir, other).files:
      shutil.copy(path, os.path.join(out, os.path.basename(path)))
    copied[other] = num
  return copied


def _start_over(out: str) -> None:
  """Removes what a filter run writes in `out` (--overwrite)."""
  for name in os.listdir(out):
    if name.endswith((".array_record", ".array_record.incomplete")) or name in (
        "counts.json", "filter.json", "tokenizer.model", "tokenizer.json"):
      os.remove(os.path.join(out, name))


def check_indices(scores_dir: str, data_dir: str, split: str, largest: int,
                  num_records: int) -> None:
  if largest >= num_records:
    raise ValueError(f"{scores_dir} scores record {largest} but {data_dir} split "
                     f"{split!r} has {num_records}: the scores belong to another split")


def filter_split(scores_dir: str, data_dir: str, split: str, out: str, keep: str = "",
                 top_fraction: float | None = None, by: str | None = None,
                 shards: int = 4, overwrite: bool = False, break_lease: bool = False) -> dict:
  """The whole command in one process (the scores table in memory; the Beam
  pipeline of beam_filter.py writes the same bytes at any size); returns
  what it writes to filter.json. One writer per `out` (a lease);
  `out`/made_by.json records what made it (`claim_output`)."""
  with lease.take(out, "filter", break_lease):
    return _filter_split(scores_dir, data_dir, split, out, keep, top_fraction, by, shards,
                         overwrite)


def claim_output(scores_dir, data_dir, split, out, keep, top_fraction, by, shards,
                 overwrite) -> None:
  """`out`/made_by.json: the scores (and the model that made them), the data
  and the rules; a re-run with others is refused unless `overwrite`, which
  starts `out` afresh."""
  scored_by = fileio.read_json(os.path.join(scores_dir, "summary.json"), {})
  made_by = {"scores": os.path.abspath(scores_dir), "data": os.path.abspath(data_dir),
             "split": split, "keep": keep, "top_fraction": top_fraction, "by": by,
             "shards": shards, "scored_by": {k: scored_by.get(k) for k in (
                 "model", "means", "gamma_sample", "gamma_pair")}}
  provenance.claim(os.path.join(out, "made_by.json"), made_by, overwrite,
                   lambda: _start_over(out), out)


def _filter_split(scores_dir, data_dir, split, out, keep, top_fraction, by, shards, overwrite):
  table = read_scores(scores_dir)
  num_records = len(records.ShardedSource(records.split_files(data_dir, split).files))
  mask, rule_stats = select(table, parse_rules(keep), top_fraction, by)
  if len(table["key"]):
    check_indices(scores_dir, data_dir, split, int(table["index"].max()), num_records)
  claim_output(scores_dir, data_dir, split, out, keep, top_fraction, by, shards, overwrite)
  kept = np.sort(table["index"][mask])
  written = write_filtered(data_dir, split, out, kept, shards)
  by_kind = collections.defaultdict(lambda: {"kept": 0, "dropped": 0})
  for kind, k in zip(table["noise_kind"], mask):
    by_kind[kind or "unknown"]["kept" if k else "dropped"] += 1
  stats = summary(scores_dir, data_dir, split, keep, top_fraction, by, num_records,
                  int(len(mask)), written, rule_stats, by_kind)
  write_counts(data_dir, out, split, written, stats)
  return stats


def summary(scores_dir: str, data_dir: str, split: str, keep: str, top_fraction, by,
            num_records: int, scored: int, written: int, rule_stats: dict,
            by_kind: dict) -> dict:
  """filter.json's contents."""
  return {"source": os.path.abspath(data_dir), "scores": os.path.abspath(scores_dir),
          "split": split, "keep": keep, "top_fraction": top_fraction, "by": by,
          "records": num_records, "scored": scored, "kept": written,
          "dropped": num_records - written, "not_scored": num_records - scored,
          "kept_fraction": round(written / max(1, num_records), 4),
          "rules": rule_stats, "noise_kind": dict(sorted(by_kind.items()))}


def write_counts(data_dir: str, out: str, split: str, written: int, stats: dict) -> None:
  """The rest of an ordinary data directory: tokenizer, other splits,
  counts.json; and filter.json."""
  splits = {split: written, **copy_rest(data_dir, out, split)}
  fileio.write_json(os.path.join(out, "counts.json"), {"splits": splits, "filter": stats})
  fileio.write_json(os.path.join(out, "filter.json"), stats)
