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

import bisect
import dataclasses
import glob
import json
import logging
import os
from typing import Any

import msgpack

log = logging.getLogger(__name__)

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


def shard_name(split: str, shard: int, num_shards: int) -> str:
  """`{split}-0000j-of-0000N.array_record`: the one shard naming rule."""
  return f"{split}-{shard:05d}-of-{num_shards:05d}.array_record"


def write_shard(path: str, samples) -> int:
  """Writes encoded triplets (an iterable of dicts) to one ArrayRecord shard,
  atomically: a crash leaves `path + '.incomplete'`, never a short `path`.
  Returns the number of records written."""
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = path + ".incomplete"
  # group_size:1 keeps random access cheap (one record per chunk).
  writer = ArrayRecordWriter(tmp, "group_size:1")
  count = 0
  try:
    for sample in samples:
      writer.write(encode(sample))
      count += 1
  finally:
    writer.close()
  os.replace(tmp, path)
  return count


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
        "data with `python -m alip_jax.tools.synthetic --out DIR` or point "
        "config.data.dir at your own data.")
  counts_path = os.path.join(data_dir, "counts.json")
  num = -1
  if os.path.exists(counts_path):
    with open(counts_path) as f:
      counts = json.load(f)
    num = counts["splits"].get(split, -1)
    check_shard_files(data_dir, split, files, counts.get("shards", {}).get(split))
  return Split(split, files, num)


class ShardMismatchError(RuntimeError):
  """The shard files of a split are not the ones its build wrote."""


def check_shard_files(data_dir: str, split: str, files: list[str], expected) -> None:
  """Only the shards a build listed (counts.json "shards", written by
  alip_jax.tools.build) may be read: a stray file (e.g. from an earlier build
  with another --num_shards) or a missing one is an error naming them."""
  if expected is None:
    return
  found = {os.path.basename(f) for f in files}
  stray, missing = sorted(found - set(expected)), sorted(set(expected) - found)
  if stray or missing:
    raise ShardMismatchError(
        f"{data_dir}: the {split!r} shards on disk do not match counts.json"
        + (f"; not from this build: {stray}" if stray else "")
        + (f"; missing: {missing}" if missing else "")
        + ". Move the stray files away or rebuild the split (alip_jax.tools.build --overwrite).")


class CorruptShardError(RuntimeError):
  """An ArrayRecord shard that cannot be opened or a record that cannot be read."""


# What ShardedSource returns for a record it could not read (skip mode): the
# pipeline's decode step counts it as `unreadable_record` and skips it.
UNREADABLE = b"\x00alip_jax:unreadable"


class ShardedSource:
  """Random access over ArrayRecord shards, opened one by one so that a bad
  shard or record is named.

  A shard that does not open (truncated: no footer) raises
  CorruptShardError naming it, or with `skip_bad_shards` is left out with a
  warning. A record that does not read (corrupt bytes inside a shard) raises
  CorruptShardError naming the file and the record index, or with
  `skip_bad_shards` comes back as UNREADABLE, to be counted and skipped.
  Either way no epoch is silently shorter than the shards say.
  `skip_bad_records` (default: as `skip_bad_shards`) decides for records
  alone (the scorer counts them always); `skip_option` is the setting the
  errors name.
  """

  def __init__(self, files: list[str], skip_bad_shards: bool = False,
               skip_bad_records: bool | None = None,
               skip_option: str = "data.skip_bad_shards=True"):
    self.files, self.sources, self.skipped_shards = [], [], []
    self.skip_bad_shards, self.skip_option = skip_bad_shards, skip_option
    self.skip_bad_records = skip_bad_shards if skip_bad_records is None else skip_bad_records
    import grain  # here, not at the top: the builder's Beam workers need no JAX
    for path in files:
      try:
        source = grain.sources.ArrayRecordDataSource([path])
      except Exception as e:  # Riegeli: "Corrupted Riegeli/records file: …"
        if not skip_bad_shards:
          raise CorruptShardError(
              f"{path}: not a readable ArrayRecord shard, probably truncated ({e}). Copy or "
              f"rebuild it, or set {skip_option} to go on without it.") from e
        log.warning("skipping shard %s: cannot be opened (%s)", path, e)
        self.skipped_shards.append(path)
        continue
      self.files.append(path)
      self.sources.append(source)
    if not self.sources:
      raise CorruptShardError(f"none of the {len(files)} shards could be opened: {files}")
    self.starts = [0]
    for source in self.sources:
      self.starts.append(self.starts[-1] + len(source))

  def __len__(self) -> int:
    return self.starts[-1]

  def __getitem__(self, index: int) -> bytes:
    shard = bisect.bisect_right(self.starts, index) - 1
    local = index - self.starts[shard]
    try:
      return self.sources[shard][local]
    except Exception as e:
      message = f"{self.files[shard]}: record {local} cannot be read ({e})"
      if not self.skip_bad_records:
        raise CorruptShardError(f"{message}. Rebuild the shard, or set "
                                f"{self.skip_option} to skip such records.") from e
      log.warning("skipping %s", message)
      return UNREADABLE

  def __repr__(self):
    return f"ShardedSource({len(self.files)} shards, {len(self)} records)"
