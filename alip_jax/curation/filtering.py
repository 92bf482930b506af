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


def select(table: dict, rules=(), top_fraction: float | None = None,
           by: str | None = None) -> tuple[np.ndarray, dict]:
  """Returns (keep mask over the table's rows, stats per rule)."""
  keep = np.ones(len(table["key"]), bool)
  stats = {}
  for column, op, value in rules:
    passes = _OPS[op](table[column], value)
    stats[f"{column}{op}{value}"] = {"pass": int(passes.sum()), "fail": int((~passes).sum())}
    keep &= passes
  if top_fraction is not None:
    if not 0 < top_fraction <= 1 or by not in COLUMNS or by in _TEXT_COLUMNS:
      raise ValueError(f"--top_fraction must be in (0, 1] and --by a score column, got "
                       f"{top_fraction} and {by!r}")
    candidates = np.flatnonzero(keep)
    count = int(round(top_fraction * len(table["key"])))
    order = np.lexsort((table["index"][candidates], -table["s_tc"][candidates],
                        -table[by][candidates]))
    top = np.zeros_like(keep)
    top[candidates[order[:count]]] = True
    stats[f"top {top_fraction} by {by}"] = {"pass": int(top.sum()), "fail": int(keep.sum() - top.sum())}
    keep = top
  return keep, stats


def write_filtered(data_dir: str, split: str, out: str, kept_indices: np.ndarray,
                   shards: int) -> int:
  """Writes the records at `kept_indices` (sorted) of `split` to `out`."""
  source = records.ShardedSource(records.split_files(data_dir, split).files)
  os.makedirs(out, exist_ok=True)
  written = 0
  chunks = np.array_split(kept_indices, max(1, min(shards, len(kept_indices))))
  for s, chunk in enumerate(chunks):
    path = os.path.join(out, records.shard_name(split, s, len(chunks)))
    written += records.write_shard(path, (records.decode(source[int(i)]) for i in chunk))
  return written


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


def filter_split(scores_dir: str, data_dir: str, split: str, out: str, keep: str = "",
                 top_fraction: float | None = None, by: str | None = None,
                 shards: int = 4, overwrite: bool = False, break_lease: bool = False) -> dict:
  """The whole command; returns what it writes to filter.json. One writer
  per `out` (a lease); `out`/made_by.json records the scores (and the model
  that made them), the data and the rules: a re-run with others is refused
  unless `overwrite`. Nothing is written before the rules and inputs check."""
  with lease.take(out, "filter", break_lease):
    return _filter_split(scores_dir, data_dir, split, out, keep, top_fraction, by, shards,
                         overwrite)


def _filter_split(scores_dir, data_dir, split, out, keep, top_fraction, by, shards, overwrite):
  table = read_scores(scores_dir)
  num_records = len(records.ShardedSource(records.split_files(data_dir, split).files))
  mask, rule_stats = select(table, parse_rules(keep), top_fraction, by)
  if len(table["key"]) and table["index"].max() >= num_records:
    raise ValueError(f"{scores_dir} scores record {table['index'].max()} but {data_dir} split "
                     f"{split!r} has {num_records}: the scores belong to another split")
  scored_by = fileio.read_json(os.path.join(scores_dir, "summary.json"), {})
  made_by = {"scores": os.path.abspath(scores_dir), "data": os.path.abspath(data_dir),
             "split": split, "keep": keep, "top_fraction": top_fraction, "by": by,
             "shards": shards, "scored_by": {k: scored_by.get(k) for k in (
                 "model", "means", "gamma_sample", "gamma_pair")}}
  provenance.claim(os.path.join(out, "made_by.json"), made_by, overwrite,
                   lambda: _start_over(out), out)
  kept = np.sort(table["index"][mask])
  written = write_filtered(data_dir, split, out, kept, shards)
  by_kind = collections.defaultdict(lambda: {"kept": 0, "dropped": 0})
  for kind, k in zip(table["noise_kind"], mask):
    by_kind[kind or "unknown"]["kept" if k else "dropped"] += 1
  stats = {"source": os.path.abspath(data_dir), "scores": os.path.abspath(scores_dir),
           "split": split, "keep": keep, "top_fraction": top_fraction, "by": by,
           "records": num_records, "scored": int(len(mask)), "kept": written,
           "dropped": num_records - written, "not_scored": num_records - int(len(mask)),
           "kept_fraction": round(written / max(1, num_records), 4),
           "rules": rule_stats, "noise_kind": dict(sorted(by_kind.items()))}
  splits = {split: written, **copy_rest(data_dir, out, split)}
  fileio.write_json(os.path.join(out, "counts.json"), {"splits": splits, "filter": stats})
  fileio.write_json(os.path.join(out, "filter.json"), stats)
  return stats
