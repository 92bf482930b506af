"""Reading what people have: webdataset tars (img2dataset's layout) and
Parquet / CSV / TSV / JSONL tables, as (key, image bytes, text, meta) rows.
Shared by the data builder and the captioner; stdlib only (pyarrow for
Parquet), so the captioner can run in a venv with just torch/transformers.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os
import posixpath
import re

from alip_jax import extras
from alip_jax.tools import tar_reader

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


class BadInputError(ValueError):
  """An input that cannot be read as asked (wrong column types, a missing
  column): raised before any row is read, naming the file and column."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """What an untrusted input may do (docs/DATA.md)."""
  max_member_bytes: int = 64 << 20   # a tar member or table image file, from its header / size
  skip_bad_members: bool = False     # damaged tar: count and resync instead of failing
  allow_outside_paths: bool = False  # table image paths outside the table's directory


def open_local(path: str):
  return open(path, "rb")


def read_tar(path: str, limits: Limits = Limits(), counts=None, opener=open_local):
  """webdataset / img2dataset tar: KEY.jpg (or png, webp…), KEY.txt the
  text, KEY.json metadata (its "caption" when there is no .txt); a key's
  members may lie anywhere in the archive (tar_reader)."""
  with opener(path) as f:
    for key, parts in tar_reader.read_samples(f, path, limits.max_member_bytes,
                                              limits.skip_bad_members, counts):
      key = posixpath.basename(key)
      if any(v is None for v in parts.values()):
        yield key, None, None, {"__skip__": "member_too_large"}
        continue
      image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
      text = parts.get("txt")
      meta = {}
      if "json" in parts:
        try:
          meta = json.loads(parts["json"])
        except ValueError:
          meta = {}
      if not isinstance(meta, dict):
        meta = {}
      if text is None and isinstance(meta.get("caption"), str):
        text = meta["caption"].encode("utf-8")
      source_meta = {k: meta[k] for k in ("url", "width", "height") if k in meta}
      yield key, image, text, source_meta


def read_table_rows(path: str, only: list[str] | None = None, opener=open_local):
  """Rows of a Parquet / CSV / TSV / JSONL file as dicts. `only`: Parquet
  reads just these columns (those it has), e.g. the keys without the images."""
  with opener(path) as raw:
    if path.endswith(".parquet"):
      pq = extras.require("pyarrow.parquet", f"Reading {path}")
      table = pq.ParquetFile(raw)
      if only is not None:
        only = [c for c in only if c in table.schema_arrow.names]
        if not only:
          yield from ({} for _ in range(table.metadata.num_rows))
          return
      for batch in table.iter_batches(batch_size=256, columns=only):
        yield from batch.to_pylist()
      return
    f = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
    if path.endswith((".csv", ".tsv")):
      yield from csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
      return
    for line_number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except ValueError as e:
          yield {"__error__": f"line {line_number}: {e}"}


# Parquet column types each column may have (pyarrow type ids, checked at start-up).
_ALLOWED = {"key": ("string", "large_string", "int8", "int16", "int32", "int64", "uint8",
                    "uint16", "uint32", "uint64"),
            "text": ("string", "large_string", "binary", "large_binary", "null"),
            "image": ("binary", "large_binary", "string", "large_string", "struct", "null")}


def check_table(path: str, columns: Columns, opener=open_local) -> None:
  """Raises BadInputError when a Parquet table's key/text/image column has a
  type the builder cannot use, or a table lacks the image or text column —
  before any row is read, so that a wrong table is not a run of skips."""
  if path.endswith(".parquet"):
    pq = extras.require("pyarrow.parquet", f"Reading {path}")
    with opener(path) as f:
      schema = pq.ParquetFile(f).schema_arrow
    types = {field.name: field.type for field in schema}
  elif path.endswith((".csv", ".tsv")):
    with opener(path) as raw:
      header = next(csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="replace"),
                               delimiter="\t" if path.endswith(".tsv") else ","), [])
    types = {name: "string" for name in header}
  else:
    return  # JSONL has no schema: rows with wrong types are counted (bad_column_type)
  for role in ("key", "text", "image"):
    name = getattr(columns, role)
    if name not in types:
      if role == "key":
        continue  # keys are then made from the file name and row number
      raise BadInputError(f"{path}: no {role} column {name!r} (columns: {sorted(types)}); "
                          f"name it with --{role}_column")
    kind = types[name] if isinstance(types[name], str) else str(types[name]).split("<")[0]
    if kind not in _ALLOWED[role]:
      raise BadInputError(f"{path}: column {name!r} (the {role} column) has type "
                          f"{types[name]}; it must be one of {', '.join(_ALLOWED[role])}")


def _type_ok(value, role) -> bool:
  kinds = {"key": (str, int), "text": (str, bytes), "image": (str, bytes, dict)}[role]
  return value is None or (isinstance(value, kinds) and not isinstance(value, bool))


def _image_path(table: str, image: str, limits: Limits) -> str | None:
  """The image file a table row names, or None if it lies outside the
  table's directory (absolute, `..`, or a symlink out) without
  allow_outside_paths."""
  directory = posixpath.dirname(table) if "://" in table else os.path.dirname(table)
  if "://" in table:
    resolved = posixpath.normpath(posixpath.join(directory, image))
    inside = not posixpath.isabs(image) and resolved.startswith(directory + "/")
    return resolved if inside or limits.allow_outside_paths else None
  resolved = os.path.join(directory, image)
  root = os.path.realpath(directory or ".")
  inside = os.path.commonpath([root, os.path.realpath(resolved)]) == root
  return resolved if inside or limits.allow_outside_paths else None


def read_table(path: str, columns: Columns, limits: Limits = Limits(), opener=open_local):
  stem = os.path.splitext(os.path.basename(path))[0]
  for index, row in enumerate(read_table_rows(path, opener=opener)):
    key = row.get(columns.key)
    key = f"{stem}-{index:08d}" if key is None or key == "" else str(key)
    if "__error__" in row:
      yield key, None, None, {"__error__": row["__error__"]}
      continue
    if not all(_type_ok(row.get(getattr(columns, r)), r) for r in ("key", "text", "image")):
      yield key, None, None, {"__skip__": "bad_column_type"}
      continue
    image = row.get(columns.image)
    if isinstance(image, dict):  # HF datasets: {"bytes": …, "path": …}
      image = image.get("bytes") or image.get("path")
    if isinstance(image, str) and image:
      image_path = _image_path(path, image, limits)
      if image_path is None:
        yield key, None, None, {"__skip__": "image_path_outside_table"}
        continue
      try:
        with opener(image_path) as f:
          image = f.read(limits.max_member_bytes + 1)
      except OSError:
        yield key, None, row.get(columns.text), {"__missing_file__": image_path}
        continue
      if len(image) > limits.max_member_bytes:
        yield key, None, None, {"__skip__": "member_too_large"}
        continue
    text = row.get(columns.text)
    yield key, image if isinstance(image, bytes) and image else None, text, {}


def read_input(path: str, columns: Columns, limits: Limits = Limits(), counts=None,
               opener=open_local):
  """(key, image bytes, text, meta) rows of one input. `meta` may carry
  `__error__` (an unreadable row), `__missing_file__` or `__skip__` (a
  reason). File-level problems go to `counts` (tar_reader)."""
  if path.endswith(".tar"):
    return read_tar(path, limits, counts, opener)
  if path.endswith(TABLE_EXTENSIONS):
    return read_table(path, columns, limits, opener)
  raise ValueError(f"{path}: unknown input kind (expected .tar, or a table: "
                   f"{', '.join(TABLE_EXTENSIONS)})")


def caption_rows(path: str, opener=open_local):
  """(key, [captions]) per row of a captions file (JSONL or Parquet with
  `key` and `caption`: a string or a list)."""
  for row in read_table_rows(path, opener=opener):
    if "__error__" in row or row.get("key") is None:
      raise BadInputError(f"{path}: caption rows need 'key' and 'caption' ({row})")
    value = row.get("caption")
    yield str(row["key"]), value if isinstance(value, list) else [value]
