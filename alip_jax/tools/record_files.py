"""ArrayRecord files on any Beam file system (ArrayRecord itself reads and
writes local files): the builder's spill files and shards."""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile

from apache_beam.io.filesystems import CompressionTypes, FileSystems

from alip_jax.data import records
from alip_jax.tools.manifest import open_any


def write_records(path: str, samples: list[dict]) -> int:
  """records.write_shard to a local path, or locally and then copied to a
  remote one (ArrayRecord writes local files)."""
  if "://" not in path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return records.write_shard(path, samples)
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, posixpath.basename(path))
    written = records.write_shard(local, samples)
    with open(local, "rb") as src, FileSystems.create(
        path, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
      shutil.copyfileobj(src, dst, 1 << 24)
  return written


def read_records(path: str) -> list[dict]:
  from array_record.python.array_record_module import ArrayRecordReader
  with tempfile.TemporaryDirectory() as tmp:
    if "://" in path:
      local = os.path.join(tmp, posixpath.basename(path))
      with open_any(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
      path = local
    reader = ArrayRecordReader(path)
    try:
      return [records.decode(r) for r in reader.read_all()]
    finally:
      reader.close()
