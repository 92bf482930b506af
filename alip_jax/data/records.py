"""The triplet record: one ArrayRecord record per sample, msgpack-encoded.

Schema (see docs/DATA.md):
  key       str    unique sample key, used to check alignment end to end
  image     bytes  encoded image (JPEG in the embedded data)
  raw_text  bytes  UTF-8 alt-text as scraped (may be noisy / unrelated)
  caption   bytes  UTF-8 synthetic caption from a captioner
  captions  list[bytes]  optional: clean reference captions (evaluation splits)
  meta      dict   optional: evaluation-only metadata (noise kind, labels);
                   never fed to training

Texts are stored as bytes rather than msgpack strings so that a record with
non-UTF-8 text can still be read and *reported* by the pipeline instead of
crashing the reader.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import msgpack

REQUIRED_FIELDS = ("key", "image", "raw_text", "caption")


def encode(sample: dict[str, Any]) -> bytes:
  """Serialises one triplet (values: str/bytes/list/dict of plain types)."""
  missing = [f for f in REQUIRED_FIELDS if f not in sample]
  if missing:
    raise ValueError(f"record {sample.get('key')!r} lacks fields {missing}")
  out = dict(sample)
  for field in ("raw_text", "caption"):
    if isinstance(out[field], str):
      out[field] = out[field].encode("utf-8")
  if "captions" in out:
    out["captions"] = [c.encode("utf-8") if isinstance(c, str) else c
                       for c in out["captions"]]
  return msgpack.packb(out, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
  """Inverse of `encode`; texts stay bytes (decoded by the pipeline)."""
  return msgpack.unpackb(data, raw=False)


@dataclasses.dataclass(frozen=True)
class Split:
  """A split on disk: its shard files and its counts file."""
  name: str
  files: list[str]
  num_records: int


def split_files(data_dir: str, split: str) -> Split:
  """Finds `{split}-?????-of-?????.array_record` shards and their count."""
  files = sorted(glob.glob(os.path.join(data_dir, f"{split}-*.array_record")))
  if not files:
    raise FileNotFoundError(
        f"no ArrayRecord shards for split {split!r} in {data_dir!r} (expected "
        f"files named {split}-00000-of-0000N.array_record). Build the embedded "
        "data with `python -m alip_jax.data.synthetic --out DIR` or point "
        "config.data.dir at your own data.")
  counts_path = os.path.join(data_dir, "counts.json")
  num = -1
  if os.path.exists(counts_path):
    with open(counts_path) as f:
      num = json.load(f)["splits"].get(split, -1)
  return Split(split, files, num)
