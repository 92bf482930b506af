"""Workdir files on local disk or in a bucket (gs://, s3://) through etils.epath.

TPU VM pods keep the workdir on GCS: every process sees it and it outlives
the VMs. Orbax writes checkpoints there itself; this module covers the
trainer's own small files (config.json, eval.json, metrics.jsonl, the
tokenizer copy, profiles). gs:// needs `gcsfs` (alip-jax's [cloud] extra).

Object stores have no append and no rename: a JSON file is written whole (an
object write is atomic), and a growing file (metrics.jsonl, TensorBoard
events) is rewritten whole at most every minute and on close (`BucketFile`).
"""

from __future__ import annotations

import json
import os
import time

from etils import epath

REMOTE_PREFIXES = ("gs://", "s3://", "az://")


def is_remote(path) -> bool:
  return str(path).startswith(REMOTE_PREFIXES)


def join(path, *names) -> str:
  """os.path.join that keeps 'gs://bucket/…' intact."""
  return str(epath.Path(path).joinpath(*names))


def exists(path) -> bool:
  return epath.Path(path).exists()


def makedirs(path) -> None:
  epath.Path(path).mkdir(parents=True, exist_ok=True)


_REQUIRED = object()


def read_json(path, default=_REQUIRED):
  """The file's JSON; `default` when it does not exist (if given)."""
  if default is not _REQUIRED and not exists(path):
    return default
  return json.loads(epath.Path(path).read_text())


def save_safetensors(tensors: dict, path: str) -> None:
  """safetensors' save_file, with the file mode open() would give (0666
  less the umask): safetensors writes 0600, which other users and services
  reading an export (a web server, a shared model directory) cannot read."""
  from safetensors.numpy import save_file
  save_file(tensors, path, metadata={"format": "pt"})
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def write_text(path, text: str) -> None:
  """Writes `text` whole: readers see the old or the new file, never half."""
  if is_remote(path):
    epath.Path(path).write_text(text)
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path, obj) -> None:
  write_text(path, json.dumps(obj, indent=1))


def copy(source, destination) -> None:
  epath.Path(destination).write_bytes(epath.Path(source).read_bytes())


def copy_tree(source, destination) -> None:
  """Copies a local directory tree (e.g. a profile) to `destination`."""
  for directory, _, names in os.walk(source):
    for name in names:
      local = os.path.join(directory, name)
      copy(local, join(destination, os.path.relpath(local, source)))


class BucketFile:
  """A growing file in a bucket. Objects cannot be appended to, so the whole
  content is rewritten, at most every `flush_seconds` and on close."""

  def __init__(self, path, flush_seconds: float = 60.0, keep_existing: bool = False):
    self.path = epath.Path(path)
    old = self.path.read_bytes() if keep_existing and self.path.exists() else b""
    self.buffer = bytearray(old)
    self.flush_seconds, self.last_flush, self.dirty = flush_seconds, 0.0, False

  def write(self, data: bytes) -> None:
    self.buffer += data
    self.dirty = True

  def flush(self, force: bool = False) -> None:
    if self.dirty and (force or time.time() - self.last_flush >= self.flush_seconds):
      self.path.write_bytes(bytes(self.buffer))
      self.dirty, self.last_flush = False, time.time()

  def close(self) -> None:
    self.flush(force=True)


def open_for_append(path, flush_seconds: float = 60.0):
  """A binary file that keeps what `path` holds and appends to it: a plain
  file locally, a `BucketFile` in a bucket."""
  if is_remote(path):
    return BucketFile(path, flush_seconds, keep_existing=True)
  return open(path, "ab")


class _TensorBoardBucketWriters:
  """tensorboardX writer factory: event files in a bucket as BucketFiles."""

  def open(self, path):
    return BucketFile(path)

  def directory_check(self, path):
    del path  # buckets have no directories to make


def route_tensorboard_to_buckets() -> None:
  """Makes tensorboardX write gs:// (and s3://, az://) event files through
  epath, as every other workdir file."""
  from tensorboardX import record_writer
  for prefix in REMOTE_PREFIXES:
    record_writer.register_writer_factory(prefix.split(":")[0], _TensorBoardBucketWriters())
