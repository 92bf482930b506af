"""The builder's Apache Beam graph: inputs → keyed samples ⋈ captions →
one record per key → shards by a stable hash of the key → ArrayRecord.

  inputs (tars, tables)  ──ReadInput──►  (key, (file, position, image, text, meta))
  captions files       ──ReadCaptions──► (key, (file, row, [captions]))
          └──────────── CoGroupByKey ────────────┘
  MakeRecord: first occurrence by (file, position) wins, the rest are
    `duplicate_key`; caption keys with no sample are `orphan_caption_key`;
    texts checked, image decoded / validated / resized → (shard, record)
  (shard, record) ⋈ every shard id ── WriteShard: sorted by key,
    records.write_shard, a sidecar with its count

Everything that decides the output (which duplicate wins, which caption,
which shard, the order inside a shard, the tokenizer's text sample) depends
on keys and input positions only, never on bundles, workers or the runner.
Every skip is a Beam counter in namespace `alip_build`; build.py turns them
into stats.json.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import CompressionTypes, FileSystems
from apache_beam.metrics import Metrics

from alip_jax.data import records, web
from alip_jax.data.manifest import join, open_any, write_bytes
from alip_jax.data.inputs import caption_rows, read_input

log = logging.getLogger(__name__)

NAMESPACE = "alip_build"
TOKENIZER_SAMPLE = 1000  # records whose texts train the tokenizer (smallest key hashes)


def count(reason: str, n: int = 1) -> None:
  Metrics.counter(NAMESPACE, reason).inc(n)


def key_hash(key: str) -> int:
  """A stable 64-bit hash (Python's hash() is salted per process)."""
  return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                        digest_size=8).digest(), "big")


class ReadInput(beam.DoFn):
  """(file index, path) → (key, (file index, position, image, text, meta)).
  Unreadable rows (whose key is not known) are counted here; rows refused
  on reading (meta `__skip__`) travel on, so that MakeRecord counts them
  once and lets a later readable copy of the key stand in."""

  def __init__(self, columns, limits):
    self.columns, self.limits = columns, limits

  def process(self, element):
    file_index, path = element
    problems = collections.Counter()
    for position, (key, image, text, meta) in enumerate(
        read_input(path, self.columns, self.limits, problems, open_any)):
      if "__error__" in meta:
        count("unreadable_input_row")
        log.warning("%s: %s skipped (%s)", path, key, meta["__error__"])
      else:
        yield key, (file_index, position, image, text, meta)
    for reason, n in problems.items():
      count(reason, n)
      log.warning("%s: %d × %s", path, n, reason)


def read_captions(element):
  file_index, path = element
  for row, (key, captions) in enumerate(caption_rows(path, open_any)):
    yield key, (file_index, row, captions)


class MakeRecord(beam.DoFn):
  """(key, {samples, captions}) → (shard, record), or a counted skip.
  Tagged output `texts`: (key hash, raw, caption) for the tokenizer."""

  def __init__(self, options):
    self.options = options

  def _text(self, value, field):
    text, problem = web.check_text(value)
    if problem:
      count(f"{problem}_{field}")
    elif len(web.clean_text(text)) > self.options.max_text_chars:
      count(f"too_long_{field}")
      return None
    return text

  def process(self, element):
    key, groups = element
    o = self.options
    samples = sorted(groups["samples"], key=lambda s: s[:2])
    choices = [c for *_, cs in sorted(groups["captions"], key=lambda c: c[:2]) for c in cs]
    if not samples:
      count("orphan_caption_key")
      return
    usable = [s for s in samples if "__skip__" not in s[4]]
    for *_, meta in samples:
      if "__skip__" in meta:
        count(meta["__skip__"])
    if not usable:
      return
    if len(usable) > 1:
      count("duplicate_key", len(usable) - 1)
    _, _, image, text, meta = usable[0]
    if image is None:
      count("missing_image")
      if "__missing_file__" in meta:
        log.warning("%s skipped: no image file %s", key, meta["__missing_file__"])
      return
    raw = self._text(text, "raw_text")
    if raw is None:
      return
    if choices:
      pick = choices[0] if o.caption_choice == "first" else choices[
          (key_hash(key) + o.seed) % len(choices)]
      caption = self._text(pick, "caption")
      if caption is None:
        return
    elif o.missing_caption == "raw":
      caption, meta = raw, {**meta, "caption_from_raw": True}
    else:
      count("missing_caption")
      return
    try:
      decoded = web.load_image(image, o.max_pixels, o.resize)
    except web.ImageTooLarge:
      count("image_too_large")
      return
    except Exception:  # pylint: disable=broad-except
      count("undecodable_image")
      return
    if o.resize:
      image = web.encode_jpeg(web.resize_shorter(decoded, o.resize), o.jpeg_quality)
    record = dict(key=key, image=image, raw_text=raw, caption=caption)
    if o.references:
      record["captions"] = [c for c in choices if isinstance(c, str) and web.clean_text(c)]
    if meta:
      record["meta"] = meta
    if meta.get("caption_from_raw"):
      count("caption_from_raw")  # written, flagged: not a skip
    yield key_hash(key) % o.num_shards, record
    yield beam.pvalue.TaggedOutput("texts", (key_hash(key), raw, caption))


class WriteShard(beam.DoFn):
  """(shard, {ids, records}) → the shard file (records sorted by key) and
  its sidecar `.build/NAME.json` {records, bytes}. A shard whose file and
  sidecar exist is kept (a resumed build; same inputs and options, checked
  by build.py's manifest, give the same bytes)."""

  def __init__(self, out: str, split: str, num_shards: int):
    self.out, self.split, self.num_shards = out, split, num_shards

  def process(self, element):
    shard, groups = element
    name = records.shard_name(self.split, shard, self.num_shards)
    path = join(self.out, name)
    sidecar = join(self.out, ".build", name + ".json")
    if FileSystems.exists(path) and FileSystems.exists(sidecar):
      count("reused_shards")
      return
    samples = sorted(groups["records"], key=lambda r: r["key"])
    if "://" in self.out:  # ArrayRecord writes local files: write, then copy
      with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, name)
        written = records.write_shard(local, samples)
        size = os.path.getsize(local)
        with open(local, "rb") as src, FileSystems.create(
            path, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
          shutil.copyfileobj(src, dst, 1 << 24)
    else:
      written = records.write_shard(path, samples)
      size = os.path.getsize(path)
    write_bytes(sidecar, json.dumps({"records": written, "bytes": size}).encode())


def write_tokenizer_texts(top, path: str) -> None:
  texts = [t for _, raw, caption in sorted(top) for t in (raw, caption)]
  write_bytes(path, json.dumps(texts).encode())


def build_graph(pipeline, files: list[str], caption_files: list[str], options, columns,
                limits) -> None:
  """Adds the whole build to `pipeline` (nothing runs until it is run).
  `files` and `caption_files` are expanded paths (local or a FileSystems
  scheme such as gs://); outputs go to options.out."""
  samples = (pipeline
             | "Inputs" >> beam.Create(list(enumerate(files)))
             | "SpreadInputs" >> beam.Reshuffle()
             | "ReadInput" >> beam.ParDo(ReadInput(columns, limits)))
  captions = (pipeline
              | "CaptionFiles" >> beam.Create(list(enumerate(caption_files)))
              | "ReadCaptions" >> beam.FlatMap(read_captions))
  made = ({"samples": samples, "captions": captions}
          | "JoinCaptions" >> beam.CoGroupByKey()
          | "MakeRecord" >> beam.ParDo(MakeRecord(options)).with_outputs("texts", main="records"))
  shard_ids = pipeline | "ShardIds" >> beam.Create([(s, None) for s in range(options.num_shards)])
  _ = ({"ids": shard_ids, "records": made.records}
       | "GroupShards" >> beam.CoGroupByKey()
       | "WriteShard" >> beam.ParDo(WriteShard(options.out, options.split, options.num_shards)))
  texts_path = join(options.out, ".build", f"{options.split}-tokenizer-texts.json")
  _ = (made.texts
       | "TokenizerSample" >> beam.combiners.Top.Smallest(TOKENIZER_SAMPLE)
       | "WriteTokenizerSample" >> beam.Map(write_tokenizer_texts, texts_path))
