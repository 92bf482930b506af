"""The files of a scores directory (alip_jax.score's --out): per-process
Parquet parts and summaries, merged into one table and one summary."""

from __future__ import annotations

import collections
import glob
import os
import shutil

import numpy as np

from alip_jax import extras, fileio

SIMILARITIES = ("s_tc", "s_xt", "s_xc")  # in alip.GATE_NAMES order
WEIGHTS = {"sample": "w_sample", "raw_pair": "w_raw_pair", "caption_pair": "w_caption_pair"}
COLUMNS = ("index", "key", "noise_kind", *SIMILARITIES, *WEIGHTS.values(), "clip_score")


def tag(process_index, process_count):
  return f"{process_index:05d}-of-{process_count:05d}"


def start_over(out: str) -> None:
  """Removes what a scoring run writes in `out` (--overwrite)."""
  shutil.rmtree(os.path.join(out, "chunks"), ignore_errors=True)
  for pattern in ("summary.json", "summary-*-of-*.json", "scores-*-of-*.parquet"):
    for path in glob.glob(os.path.join(out, pattern)):
      os.remove(path)


def merge_summaries(out: str, process_count: int, num_records: int, unopened=None) -> dict:
  """The processes' summaries as one; `unopened`: {reason: records} of
  shards left out (--skip_bad_shards), added to the bad and to the records."""
  parts = [fileio.read_json(os.path.join(out, f"summary-{tag(p, process_count)}.json"))
           for p in range(process_count)]
  bad = collections.Counter(unopened or {})
  num_records += sum(bad.values())
  for part in parts:
    bad.update(part["bad"])
  scored = sum(p["scored"] for p in parts)
  seconds = max(p["seconds"] for p in parts)
  summary = {"records": num_records, "scored": scored, "bad": dict(bad),
             "processes": process_count, "seconds": round(seconds, 2),
             "records_per_s": round(sum(p["scored_now"] for p in parts) / seconds, 1)
             if seconds > 0 else None}
  if scored + sum(bad.values()) != num_records:
    raise AssertionError(f"scored {scored} + bad {dict(bad)} != {num_records} records")
  return summary


def write_parquet(table: dict, path: str) -> None:
  pa = extras.require("pyarrow", "Writing Parquet scores")
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  tmp = path + ".incomplete"
  pq.write_table(pa.table({c: table[c] for c in COLUMNS}), tmp)
  os.replace(tmp, path)


def read_scores(out: str) -> dict:
  """All parts of a scores directory as one table {column: numpy array},
  sorted by record index."""
  pq = extras.require("pyarrow.parquet", "Reading Parquet scores")
  paths = sorted(glob.glob(os.path.join(out, "scores-*-of-*.parquet")))
  if not paths:
    raise FileNotFoundError(f"no scores-*.parquet in {out}: run python -m alip_jax.score first")
  tables = [pq.read_table(p) for p in paths]
  table = {c: np.concatenate([t.column(c).to_numpy(zero_copy_only=False) for t in tables])
           for c in COLUMNS}
  order = np.argsort(table["index"], kind="stable")
  return {c: v[order] for c, v in table.items()}
