"""Reading what people have: webdataset tars (img2dataset's layout) and
Parquet / CSV / TSV / JSONL tables, as (key, image bytes, text, meta) rows.
Shared by the data builder and the captioner; stdlib only (pyarrow for
Parquet), so the captioner can run in a venv with just torch/transformers.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import json
import os
import re
import tarfile

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
TABLE_EXTENSIONS = (".parquet", ".csv", ".tsv", ".jsonl", ".json")



@dataclasses.dataclass(frozen=True)
class Columns:
  """Column names in tables."""
  key: str = "key"
  image: str = "image"   # bytes, {"bytes", "path"} struct, or a path relative to the table
  text: str = "text"


def expand(patterns: list[str]) -> list[str]:
  """Globs, with shell-style {a..b} / {x,y} braces, sorted, duplicates removed."""
  files = []
  for pattern in patterns:
    for expanded in _braces(pattern):
      matches = sorted(glob.glob(expanded))
      if not matches and not glob.has_magic(expanded):
        raise FileNotFoundError(f"input {expanded} does not exist")
      files.extend(matches)
  return list(dict.fromkeys(files))


def _braces(pattern: str) -> list[str]:
  match = re.search(r"\{([^{}]*)\}", pattern)
  if not match:
    return [pattern]
  body = match.group(1)
  numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
  if numeric:
    width = len(numeric.group(1))
    options = [str(i).zfill(width) for i in range(int(numeric.group(1)), int(numeric.group(2)) + 1)]
  else:
    options = body.split(",")
  head, tail = pattern[:match.start()], pattern[match.end():]
  return [p for option in options for p in _braces(head + option + tail)]


def _tar_groups(path: str):
  """(key, {extension: bytes}) for consecutive members sharing a key (the
  name up to its first dot), streamed: webdataset keeps a sample's files
  together."""
  key, parts = None, {}
  with tarfile.open(path) as archive:
    for member in archive:
      if not member.isfile():
        continue
      name = os.path.basename(member.name)
      member_key, _, extension = name.partition(".")
      member_key = os.path.join(os.path.dirname(member.name), member_key)
      if member_key != key and parts:
        yield key, parts
        parts = {}
      key = member_key
      parts[extension.lower()] = archive.extractfile(member).read()
  if parts:
    yield key, parts


def read_tar(path: str):
  """webdataset / img2dataset tar: KEY.jpg (or png, webp…), KEY.txt the
  text, KEY.json metadata (its "caption" when there is no .txt)."""
  for key, parts in _tar_groups(path):
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    text = parts.get("txt")
    meta = {}
    if "json" in parts:
      try:
        meta = json.loads(parts["json"])
      except ValueError:
        meta = {}
    if text is None and isinstance(meta.get("caption"), str):
      text = meta["caption"].encode("utf-8")
    source_meta = {k: meta[k] for k in ("url", "width", "height") if k in meta}
    yield os.path.basename(key), image, text, source_meta


def read_table_rows(path: str, only: list[str] | None = None):
  """Rows of a Parquet / CSV / TSV / JSONL file as dicts. `only`: Parquet
  reads just these columns (those it has), e.g. the keys without the images."""
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq
    table = pq.ParquetFile(path)
    if only is not None:
      only = [c for c in only if c in table.schema_arrow.names]
      if not only:
        yield from ({} for _ in range(table.metadata.num_rows))
        return
    for batch in table.iter_batches(batch_size=1024, columns=only):
      yield from batch.to_pylist()
  elif path.endswith((".csv", ".tsv")):
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
      yield from csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
  else:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
      for line_number, line in enumerate(f, 1):
        if line.strip():
          try:
            yield json.loads(line)
          except ValueError as e:
            yield {"__error__": f"line {line_number}: {e}"}


def read_table(path: str, columns: Columns):
  stem = os.path.splitext(os.path.basename(path))[0]
  for index, row in enumerate(read_table_rows(path)):
    key = str(row.get(columns.key) or f"{stem}-{index:08d}")
    if "__error__" in row:
      yield key, None, None, {"__error__": row["__error__"]}
      continue
    image = row.get(columns.image)
    if isinstance(image, dict):  # HF datasets: {"bytes": …, "path": …}
      image = image.get("bytes") or image.get("path")
    if isinstance(image, str) and image:
      image_path = image if os.path.isabs(image) else os.path.join(os.path.dirname(path), image)
      try:
        with open(image_path, "rb") as f:
          image = f.read()
      except OSError:
        yield key, None, row.get(columns.text), {"__missing_file__": image_path}
        continue
    text = row.get(columns.text)
    yield key, image if isinstance(image, bytes) and image else None, text, {}


def read_input(path: str, columns: Columns):
  if path.endswith(".tar"):
    return read_tar(path)
  if path.endswith(TABLE_EXTENSIONS):
    return read_table(path, columns)
  raise ValueError(f"{path}: unknown input kind (expected .tar, or a table: "
                   f"{', '.join(TABLE_EXTENSIONS)})")


def read_captions(paths: list[str]) -> dict[str, list[str]]:
  """key → its synthetic captions (JSONL or Parquet with `key`, `caption`)."""
  captions = collections.defaultdict(list)
  for path in paths:
    for row in read_table_rows(path):
      if "__error__" in row or "key" not in row:
        raise ValueError(f"{path}: caption rows need 'key' and 'caption' ({row})")
      value = row.get("caption")
      captions[str(row["key"])].extend(value if isinstance(value, list) else [value])
  return dict(captions)
