"""The builder's Apache Beam graph. Images never pass through a shuffle (on
the DirectRunner a shuffle is held in the runner's memory): keys are joined
first, and each input file is read a second time for the samples it won.

  inputs (tars, tables) ──ReadKeys──►   (key, (file, position, skip reason))
  captions files      ──ReadCaptions──► (key, (file, row, [captions]))
          └──────────── CoGroupByKey ───────────┘
  Select: first occurrence by (file, position) wins, the others are
    `duplicate_key`; caption keys with no sample are `orphan_caption_key`
    → (file, (position, key, captions)), grouped by file
  MakeRecords: re-reads the file; texts checked, image decoded / validated /
    resized; records spilled to one ArrayRecord file per output shard
    (hash(key) mod N) → (shard, spill file)
  spill files ⋈ every shard id ── WriteShard: records sorted by key,
    records.write_shard, a sidecar with its count; spills deleted

Everything that decides the output (which duplicate wins, which caption,
which shard, the order inside a shard, the tokenizer's text sample) depends
on keys and input positions only, never on bundles, workers or the runner.
Skips are data (a stage yields Count(reason, n) beside its output), summed
with every branch's end in one last combiner into .build/SPLIT-counters.json
(→ stats.json): one sink, no metrics, tagged outputs or Top.Of, so the graph
runs on Beam's DaskRunner too (tools/beam_runners.py).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from alip_jax.data import records, web
from alip_jax.tools.beam_counts import Count, counted, is_count, not_count, tally
from alip_jax.tools.inputs import caption_rows, read_input
from alip_jax.tools.manifest import join, open_any, write_bytes
from alip_jax.tools.record_files import read_records, write_records

log = logging.getLogger(__name__)

TOKENIZER_SAMPLE = 1000  # records whose texts train the tokenizer (smallest key hashes)


def key_hash(key: str) -> int:
  """A stable 64-bit hash (Python's hash() is salted per process)."""
  return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                        digest_size=8).digest(), "big")


class ReadKeys(beam.DoFn):
  """(file index, path) → (key, (file index, position, skip reason or None)).
  Unreadable rows (whose key is not known) and damage to the file are
  counted here, once; the images are read but not kept."""

  def __init__(self, columns, limits):
    self.columns, self.limits = columns, limits

  def process(self, element):
    file_index, path = element
    problems, counts = collections.Counter(), collections.Counter()
    for position, (key, _, _, meta) in enumerate(
        read_input(path, self.columns, self.limits, problems, open_any)):
      if "__error__" in meta:
        counts["unreadable_input_row"] += 1
        log.warning("%s: %s skipped (%s)", path, key, meta["__error__"])
      elif not utf8(key):
        counts["non_utf8_key"] += 1
      else:
        yield key, (file_index, position, meta.get("__skip__"))
    for reason, n in problems.items():
      log.warning("%s: %d × %s", path, n, reason)
    yield from counted(counts + problems)


def select(element):
  """(key, {samples, captions}) → (file, (position, key, captions)) for the
  occurrence that wins; the rest counted. Occurrences refused on reading
  are counted by their reason and do not shadow a later readable one."""
  key, groups = element
  samples = sorted(groups["samples"])
  if not samples:
    yield Count("orphan_caption_key")
    return
  for *_, skip in samples:
    if skip:
      yield Count(skip)
  usable = [s for s in samples if not s[2]]
  if len(usable) > 1:
    yield Count("duplicate_key", len(usable) - 1)
  if usable:
    captions = [c for *_, cs in sorted(groups["captions"]) for c in cs]
    yield usable[0][0], (usable[0][1], key, captions)


def utf8(text: str) -> bool:
  """False for a str read with errors='surrogateescape' from bytes that are
  not UTF-8 (Beam's coders cannot carry it)."""
  return not any("\udc80" <= ch <= "\udcff" for ch in text)


def read_captions(element):
  """Captions that are not UTF-8 travel as bytes, to be counted
  (non_utf8_caption) if they are chosen."""
  file_index, path = element
  for row, (key, captions) in enumerate(caption_rows(path, open_any)):
    if not utf8(key):
      yield Count("non_utf8_key")
      continue
    captions = [c.encode("utf-8", "surrogateescape") if isinstance(c, str) and not utf8(c) else c
                for c in captions]
    yield key, (file_index, row, captions)


class MakeRecords(beam.DoFn):
  """(file index, [(position, key, captions)]) → ("spill", (shard, spill
  file)) for every shard that gets records from this file, ("texts", (key
  hash, raw, caption)) per record for the tokenizer, and Counts. A worker
  holds one input file's records (resized) at a time."""

  def __init__(self, files, options, columns, limits):
    self.files, self.options, self.columns, self.limits = files, options, columns, limits

  def _text(self, value, field, counts):
    text, problem = web.check_text(value)
    if problem:
      counts[f"{problem}_{field}"] += 1
    elif len(web.clean_text(text)) > self.options.max_text_chars:
      counts[f"too_long_{field}"] += 1
      return None
    return text

  def process(self, element):
    file_index, selected = element
    path, o = self.files[file_index], self.options
    wanted = {position: (key, captions) for position, key, captions in selected}
    by_shard, counts = collections.defaultdict(list), collections.Counter()
    for position, (key, image, text, meta) in enumerate(
        read_input(path, self.columns, self.limits, None, open_any)):
      if position in wanted and wanted[position][0] == key:
        made = self.make(key, image, text, meta, wanted[position][1], counts)
        if made:
          by_shard[key_hash(key) % o.num_shards].append(made[0])
          yield "texts", made[1]
    for shard, samples in sorted(by_shard.items()):
      spill = join(o.out, ".build", f"{o.split}-spill", f"{shard:05d}-{file_index:05d}.array_record")
      write_records(spill, samples)
      yield "spill", (shard, spill)
    yield from counted(counts)

  def make(self, key, image, text, meta, choices, counts):
    """(record, tokenizer texts), or None with the reason counted."""
    o = self.options
    if image is None:
      counts["missing_image"] += 1
      if "__missing_file__" in meta:
        log.warning("%s skipped: no image file %s", key, meta["__missing_file__"])
      return None
    raw = self._text(text, "raw_text", counts)
    if raw is None:
      return None
    if choices:
      pick = choices[0] if o.caption_choice == "first" else choices[
          (key_hash(key) + o.seed) % len(choices)]
      caption = self._text(pick, "caption", counts)
      if caption is None:
        return None
    elif o.missing_caption == "raw":
      caption, meta = raw, {**meta, "caption_from_raw": True}
    else:
      counts["missing_caption"] += 1
      return None
    try:
      decoded = web.load_image(image, o.max_pixels, o.resize)
    except web.ImageTooLarge:
      counts["image_too_large"] += 1
      return None
    except Exception:  # pylint: disable=broad-except
      counts["undecodable_image"] += 1
      return None
    if o.resize:
      image = web.encode_jpeg(web.resize_shorter(decoded, o.resize), o.jpeg_quality)
    record = dict(key=key, image=image, raw_text=raw, caption=caption)
    if o.references:
      record["captions"] = [c for c in choices if isinstance(c, str) and web.clean_text(c)]
    if meta:
      record["meta"] = meta
    if meta.get("caption_from_raw"):
      counts["caption_from_raw"] += 1  # written, flagged: not a skip
    return record, (key_hash(key), raw, caption)


class WriteShard(beam.DoFn):
  """(shard, {ids, spills}) → the shard file (its records from every spill
  file, sorted by key) and its sidecar `.build/NAME.json` {records, bytes};
  the spills are deleted. A shard whose file and sidecar exist is kept (a
  resumed build: same inputs and options, checked by build.py's manifest,
  give the same bytes)."""

  def __init__(self, out: str, split: str, num_shards: int):
    self.out, self.split, self.num_shards = out, split, num_shards

  def process(self, element):
    shard, groups = element
    spills = sorted(set(groups["spills"]))
    name = records.shard_name(self.split, shard, self.num_shards)
    path = join(self.out, name)
    sidecar = join(self.out, ".build", name + ".json")
    if FileSystems.exists(path) and FileSystems.exists(sidecar):
      yield Count("reused_shards")
    else:
      samples = sorted((r for spill in spills for r in read_records(spill)),
                       key=lambda r: r["key"])
      written = write_records(path, samples)
      size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
      write_bytes(sidecar, json.dumps({"records": written, "bytes": size}).encode())
    if spills:
      FileSystems.delete(spills)


def write_tokenizer_texts(top, path: str) -> None:
  texts = [t for _, raw, caption in sorted(top) for t in (raw, caption)]
  write_bytes(path, json.dumps(texts).encode())


def tagged(tag: str):
  """The ("tag", value) elements of MakeRecords' output, as values."""
  return lambda element: [element[1]] if not is_count(element) and element[0] == tag else []


def counters_path(out: str, split: str) -> str:
  return join(out, ".build", f"{split}-counters.json")


def build_graph(pipeline, files: list[str], caption_files: list[str], options, columns,
                limits) -> None:
  """Adds the whole build to `pipeline` (nothing runs until it is run).
  `files` and `caption_files` are expanded paths (local or a FileSystems
  scheme such as gs://); outputs go to options.out, the counts to
  counters_path(out, split)."""
  read_keys = (pipeline
               | "Inputs" >> beam.Create(list(enumerate(files)))
               | "SpreadInputs" >> beam.Reshuffle()
               | "ReadKeys" >> beam.ParDo(ReadKeys(columns, limits)))
  read_captions_ = (pipeline
                    | "CaptionFiles" >> beam.Create(list(enumerate(caption_files)))
                    | "ReadCaptions" >> beam.FlatMap(read_captions))
  selected = ({"samples": read_keys | "Keys" >> beam.Filter(not_count),
               "captions": read_captions_ | "Captions" >> beam.Filter(not_count)}
              | "JoinCaptions" >> beam.CoGroupByKey()
              | "Select" >> beam.FlatMap(select))
  made = (selected
          | "Selected" >> beam.Filter(not_count)
          | "ByInputFile" >> beam.GroupByKey()
          | "MakeRecords" >> beam.ParDo(MakeRecords(files, options, columns, limits)))
  shard_ids = pipeline | "ShardIds" >> beam.Create([(s, None) for s in range(options.num_shards)])
  written = ({"ids": shard_ids, "spills": made | "Spills" >> beam.FlatMap(tagged("spill"))}
             | "GroupShards" >> beam.CoGroupByKey()
             | "WriteShard" >> beam.ParDo(WriteShard(options.out, options.split,
                                                     options.num_shards)))
  texts_path = join(options.out, ".build", f"{options.split}-tokenizer-texts.json")
  sampled = (made
             | "Texts" >> beam.FlatMap(tagged("texts"))
             | "TokenizerSample" >> beam.CombineGlobally(beam.combiners.TopCombineFn(
                 TOKENIZER_SAMPLE, reverse=True)).without_defaults()
             | "WriteTokenizerSample" >> beam.Map(write_tokenizer_texts, texts_path))
  counts = [stage | f"{name}Counts" >> beam.Filter(is_count) for name, stage in (
      ("ReadKeys", read_keys), ("ReadCaptions", read_captions_), ("Select", selected),
      ("MakeRecords", made))]
  _ = ((*counts, written, sampled)
       | "AllEnds" >> beam.Flatten()
       | "Tally" >> beam.CombineGlobally(tally).without_defaults()
       | "WriteCounters" >> beam.Map(lambda counters, path: write_bytes(path, json.dumps(
           counters, sort_keys=True).encode()), counters_path(options.out, options.split)))
