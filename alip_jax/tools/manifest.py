"""What a build in `--out` was made from, and files on local disk or any Beam
file system (gs://…) alike.

manifest.json holds, per split, `build`: the inputs and captions files with
sizes and mtimes, every option and where the tokenizer comes from — a
re-run with a different `build` is refused (check_out) — and, once
complete, the tokenizer's SHA-256 and the records per shard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath

from apache_beam.io.filesystems import CompressionTypes, FileSystems

from alip_jax.tools.inputs import expand


def join(base: str, *parts: str) -> str:
  """Path join for local paths and URLs (gs://…) alike, without needing the
  file system's package at graph-construction time."""
  return posixpath.join(base, *parts) if "://" in base else os.path.join(base, *parts)


def open_any(path: str):
  if "://" in path:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
  return open(path, "rb")


def write_bytes(path: str, data: bytes) -> None:
  if "://" in path:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      f.write(data)
    return
  tmp = path + ".incomplete"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def read_bytes(path: str) -> bytes | None:
  if not FileSystems.exists(path):
    return None
  with open_any(path) as f:
    return f.read()


def read_json(path: str, default):
  data = read_bytes(path)
  return json.loads(data) if data is not None else default


def write_json(path: str, value) -> None:
  write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode())


def describe_files(patterns: list[str]) -> list[dict]:
  """[{path, bytes, mtime}] of the files the patterns match, sorted by path."""
  local = [p for p in patterns if "://" not in p]
  found = [{"path": f, "bytes": os.path.getsize(f), "mtime": os.path.getmtime(f)}
           for f in expand(local)]
  for pattern in (p for p in patterns if "://" in p):
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
      raise FileNotFoundError(f"input {pattern} matches nothing")
    found += [{"path": m.path, "bytes": m.size_in_bytes, "mtime": m.last_updated_in_seconds}
              for m in matches]
  return sorted({f["path"]: f for f in found}.values(), key=lambda f: f["path"])


def sha256(path: str) -> str | None:
  data = read_bytes(path)
  return hashlib.sha256(data).hexdigest() if data is not None else None


def identity(inputs, captions, options, tokenizer: str | None, vocab_size: int):
  return {"inputs": inputs, "captions": captions, "options": dataclasses.asdict(options),
          "tokenizer_from": {"path": tokenizer, "sha256": sha256(tokenizer)} if tokenizer
          else {"vocab_size": vocab_size}}


def check_out(out: str, split: str, wanted: dict, overwrite: bool) -> None:
  """Refuses to mix builds: an `--out` whose manifest for this split differs
  (or shards of this split without a manifest) is an error, or with
  `overwrite` those shards, stats and a tokenizer trained on them go. A
  build that failed (`complete: false`) blocks nothing it could be mixed
  with: one that wrote no complete shard is replaced, and one that failed at
  the tokenizer keeps its shards for a re-run with other tokenizer options."""
  manifest = read_json(join(out, "manifest.json"), {})
  existing = [m.path for m in FileSystems.match([join(out, f"{split}-*.array_record*")])[0]
              .metadata_list]
  previous = manifest.get(split, {}).get("build")
  if previous == wanted or (previous is None and not existing):
    return
  if previous is not None and not manifest[split].get("complete"):
    complete = [p for p in existing if p.endswith(".array_record")]
    if not complete:  # failed before any shard: nothing of it to keep or to mix
      logging.warning("%s: replacing the unfinished build of split %r, which wrote no "
                      "complete shard", out, split)
      overwrite = True
    elif all(wanted[k] == previous.get(k) for k in wanted if k != "tokenizer_from"):
      return  # failed at the tokenizer: the shards do not depend on it and are kept
  if not overwrite:
    what = ("a different build (" + ", ".join(k for k in wanted if wanted[k] != previous.get(k))
            + " differ)") if previous else f"{len(existing)} shard files without a manifest"
    raise FileExistsError(f"{out} already holds split {split!r} from {what}. Choose another "
                          f"--out, or pass --overwrite to delete that split's shards first.")
  sidecars = FileSystems.match([join(out, ".build", f"{split}-*")])[0].metadata_list
  FileSystems.delete(existing + [m.path for m in sidecars]) if existing or sidecars else None
  if manifest.get(split, {}).get("tokenizer", {}).get("trained_on") == split:
    FileSystems.delete([join(out, "tokenizer.model")])
  manifest.pop(split, None)
  write_json(join(out, "manifest.json"), manifest)


