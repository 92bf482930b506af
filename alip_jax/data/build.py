"""Build ArrayRecord triplet shards from the data people have.

  python -m alip_jax.data.build --input 'laion/{00000..00099}.tar' \
      --captions captions.jsonl --out data/laion --num_shards 64 --workers 8 \
      --resize 256

Inputs (`--input`, globs; braces expand): webdataset tars as img2dataset
writes them (KEY.jpg|png|webp…, KEY.txt, KEY.json), and tables — Parquet,
CSV, TSV, JSONL — with a key column, a text column and an image column that
holds encoded bytes (or a {"bytes": …} struct, as HF datasets write) or a
path (relative to the table). Synthetic captions come from `--captions`
(JSONL or Parquet with `key` and `caption`: a string or a list), matched by
key; or `--captioner DIR` first captions every image with a local HF
image-to-text model (alip_jax/data/caption.py, in `--captioner_python`).

Output in `--out`: `{split}-0000j-of-0000N.array_record` in the schema of
records.py, `stats.json` (records written, skipped by reason, shard sizes),
`counts.json` (what the trainer reads) and `tokenizer.model` (SentencePiece,
trained on a sample of the texts, unless `--tokenizer` gives one). Input
files are dealt round-robin to the N output shards; each output shard is one
job, written to a temporary name and renamed when complete with its stats
beside it, so re-running skips finished shards. Rules: docs/DATA.md.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import importlib.resources
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from alip_jax import fileio
from alip_jax.data import records, web
from alip_jax.data.inputs import Columns, expand, read_captions, read_input, read_table_rows

log = logging.getLogger(__name__)

@dataclasses.dataclass
class BuildOptions:
  out: str
  split: str = "train"
  num_shards: int = 1
  image_column: str = "image"
  text_column: str = "text"
  key_column: str = "key"
  resize: int = 0                 # > 0: shorter side to this many pixels, re-encoded as JPEG
  jpeg_quality: int = 90
  missing_caption: str = "drop"   # or 'raw': the raw text stands in, meta.caption_from_raw
  caption_choice: str = "first"   # or 'random' (seeded by key) when a key has several
  references: bool = False        # also store all of a key's captions as `captions`
                                  # (retrieval references: a Flickr30k/COCO-style eval split)
  max_pixels: int = web.MAX_PIXELS
  seed: int = 0


# ---- One output shard.

def _text(value, counts, field) -> str | None:
  """The text, or None with its problem counted (web.check_text)."""
  text, problem = web.check_text(value)
  if problem:
    counts[f"{problem}_{field}"] += 1
  return text


def build_shard(job) -> dict:
  """Writes one output shard from its input files; returns its stats."""
  shard, num_shards, inputs, captions, skip_keys, options = job
  name = f"{options.split}-{shard:05d}-of-{num_shards:05d}.array_record"
  final = os.path.join(options.out, name)
  stats_path = os.path.join(options.out, ".stats", name + ".json")
  if os.path.exists(final) and os.path.exists(stats_path):
    with open(stats_path) as f:
      return {**json.load(f), "reused": True}
  tmp = final + ".incomplete"
  writer = ArrayRecordWriter(tmp, "group_size:1")
  counts, written, sample_texts = collections.Counter(), 0, []
  seen = set()
  rng = np.random.default_rng(options.seed + shard)
  for path in inputs:
    columns = Columns(options.key_column, options.image_column, options.text_column)
    for key, image, text, meta in read_input(path, columns):
      if "__error__" in meta:
        counts["unreadable_input_row"] += 1
        log.warning("%s: %s skipped (%s)", path, key, meta["__error__"])
        continue
      if (path, key) in skip_keys or key in seen:
        counts["duplicate_key"] += 1
        continue
      seen.add(key)
      if image is None:
        counts["missing_image"] += 1
        if "__missing_file__" in meta:
          log.warning("%s: %s skipped: no image file %s", path, key, meta["__missing_file__"])
        continue
      raw = _text(text, counts, "raw_text")
      if raw is None:
        continue
      choices = captions.get(key) or []
      caption = None
      if choices:
        pick = choices[0] if options.caption_choice == "first" else choices[
            (zlib.crc32(key.encode()) + options.seed) % len(choices)]
        caption = _text(pick, counts, "caption")
        if caption is None:
          continue
      elif options.missing_caption == "raw":
        caption, meta = raw, {**meta, "caption_from_raw": True}
      else:
        counts["missing_caption"] += 1
        continue
      try:
        decoded = web.load_image(image, options.max_pixels)
      except web.ImageTooLarge:
        counts["image_too_large"] += 1
        continue
      except Exception:  # pylint: disable=broad-except
        counts["undecodable_image"] += 1
        continue
      if options.resize:
        image = web.encode_jpeg(web.resize_shorter(decoded, options.resize), options.jpeg_quality)
      record = dict(key=key, image=image, raw_text=raw, caption=caption)
      if options.references:
        record["captions"] = [c for c in choices if isinstance(c, str) and web.clean_text(c)]
      if meta:
        record["meta"] = meta
      writer.write(records.encode(record))
      written += 1
      if meta.get("caption_from_raw"):
        counts["caption_from_raw"] += 1  # written, flagged: not a skip
      if len(sample_texts) < 2000 and rng.random() < 0.5:
        sample_texts += [raw, caption]
  writer.close()
  os.replace(tmp, final)
  stats = {"shard": name, "inputs": inputs, "written": written, "skipped": dict(counts),
           "bytes": os.path.getsize(final), "sample_texts": sample_texts}
  os.makedirs(os.path.dirname(stats_path), exist_ok=True)
  with open(stats_path, "w") as f:
    json.dump(stats, f)
  return stats


# ---- The whole build.

def duplicate_keys(files: list[str], options: BuildOptions) -> set[tuple[str, str]]:
  """(file, key) of every occurrence after the first of a key across inputs
  (within one input file the shard job skips repeats itself)."""
  first, repeats = {}, set()
  for path in files:
    if path.endswith(".tar"):
      with tarfile.open(path) as archive:
        keys = {os.path.basename(m.name).partition(".")[0] for m in archive if m.isfile()}
    else:
      stem = os.path.splitext(os.path.basename(path))[0]
      keys = {str(row.get(options.key_column) or f"{stem}-{i:08d}")
              for i, row in enumerate(read_table_rows(path, only=[options.key_column]))}
    for key in keys:
      if first.setdefault(key, path) != path:
        repeats.add((path, key))
  return repeats


def build(inputs: list[str], options: BuildOptions, captions: dict[str, list[str]] | None = None,
          workers: int = 1, tokenizer: str | None = None, vocab_size: int = 32000,
          progress=sys.stderr) -> dict:
  files = expand(inputs)
  if not files:
    raise FileNotFoundError(f"no input files match {inputs}")
  os.makedirs(options.out, exist_ok=True)
  num_shards = max(1, min(options.num_shards, len(files)))
  repeats = duplicate_keys(files, options)
  jobs = [(s, num_shards, files[s::num_shards], captions or {},
           {r for r in repeats if r[0] in files[s::num_shards]}, options)
          for s in range(num_shards)]
  start, done, results = time.time(), 0, []
  if workers > 1:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    outputs = pool.map(build_shard, jobs)
  else:
    pool, outputs = None, map(build_shard, jobs)
  for stats in outputs:
    results.append(stats)
    done += 1
    elapsed = time.time() - start
    written = sum(r["written"] for r in results)
    eta = elapsed / done * (num_shards - done)
    print(f"\rshards {done}/{num_shards}  {written} records  {written / elapsed:.0f}/s  "
          f"ETA {eta:.0f} s", end="", file=progress, flush=True)
  print(file=progress)
  if pool:
    pool.shutdown()

  skipped = collections.Counter()
  for r in results:
    skipped.update(r["skipped"])
  written = sum(r["written"] for r in results)
  if not written:
    raise ValueError(f"no record was written; skipped: {dict(skipped)}")
  tokenizer_path = os.path.join(options.out, "tokenizer.model")
  if tokenizer and os.path.abspath(tokenizer) != os.path.abspath(tokenizer_path):
    shutil.copy(tokenizer, tokenizer_path)
  elif not os.path.exists(tokenizer_path):  # (a second split reuses the first's)
    from alip_jax.data.tokenizer import train_sentencepiece
    texts = list(itertools.chain.from_iterable(r["sample_texts"] for r in results))
    train_sentencepiece([web.clean_text(t) for t in texts], tokenizer_path, vocab_size=vocab_size)
  caption_from_raw = skipped.pop("caption_from_raw", 0)  # written, only flagged
  stats = {"split": options.split, "written": written, "skipped": dict(skipped),
           "caption_from_raw": caption_from_raw,
           "shards": {r["shard"]: {"records": r["written"], "bytes": r["bytes"],
                                   "inputs": len(r["inputs"])} for r in results},
           "reused_shards": sum(1 for r in results if r.get("reused")),
           "seconds": round(time.time() - start, 1), "options": dataclasses.asdict(options)}
  # One entry per split, so train and eval splits can be built into one directory.
  all_stats = fileio.read_json(os.path.join(options.out, "stats.json"), {})
  all_stats[options.split] = stats
  counts = fileio.read_json(os.path.join(options.out, "counts.json"), {})
  counts.setdefault("splits", {})[options.split] = written
  for name, data in (("stats.json", all_stats), ("counts.json", counts)):
    with open(os.path.join(options.out, name), "w") as f:
      json.dump(data, f, indent=1)
  return stats


def run_captioner(args, out: str) -> str:
  """Runs alip_jax.data.caption over the inputs in `args.captioner_python`
  (torch lives in another venv than JAX); returns its captions file."""
  os.makedirs(args.out, exist_ok=True)
  command = [args.captioner_python, "-m", "alip_jax.data.caption", "--model", args.captioner,
             "--out", out, "--image_column", args.image_column, "--key_column", args.key_column,
             *itertools.chain.from_iterable(("--input", i) for i in args.input),
             *args.captioner_args.split()]
  # That Python imports alip_jax through a directory holding only a link to
  # the package: the package's parent may be a site-packages whose compiled
  # modules belong to this Python.
  with tempfile.TemporaryDirectory(prefix="alip_jax_path_") as path_dir:
    os.symlink(str(importlib.resources.files("alip_jax")), os.path.join(path_dir, "alip_jax"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path_dir, os.environ.get(
        "PYTHONPATH")]))}
    returncode = subprocess.run(command, env=env).returncode
  if returncode != 0:
    raise RuntimeError(f"the captioner failed: {' '.join(command)} (it needs torch and "
                       f"transformers: set --captioner_python to a Python that has them)")
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", action="append", required=True, help="tar/table files (globs)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--captions", action="append", default=[],
                      help="JSONL/Parquet with key, caption (several per key allowed)")
  parser.add_argument("--captioner", help="caption the inputs first with this local HF "
                      "image-to-text model (alip_jax/data/caption.py)")
  parser.add_argument("--captioner_python", default=sys.executable,
                      help="a Python with torch and transformers, for --captioner")
  parser.add_argument("--captioner_args", default="",
                      help="more flags for the captioner, e.g. '--device cuda --batch_size 64'")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_shards", type=int, default=1)
  parser.add_argument("--workers", type=int, default=1)
  parser.add_argument("--resize", type=int, default=0, help="shorter side, 0 = keep bytes")
  parser.add_argument("--jpeg_quality", type=int, default=90)
  parser.add_argument("--missing_caption", choices=("drop", "raw"), default="drop")
  parser.add_argument("--caption_choice", choices=("first", "random"), default="first")
  parser.add_argument("--references", action="store_true",
                      help="store every caption of a key as a retrieval reference (eval splits)")
  parser.add_argument("--image_column", default="image")
  parser.add_argument("--text_column", default="text")
  parser.add_argument("--key_column", default="key")
  parser.add_argument("--max_pixels", type=int, default=web.MAX_PIXELS)
  parser.add_argument("--tokenizer", help="an existing SentencePiece model to copy")
  parser.add_argument("--vocab_size", type=int, default=32000)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  options = BuildOptions(
      out=args.out, split=args.split, num_shards=args.num_shards, image_column=args.image_column,
      text_column=args.text_column, key_column=args.key_column, resize=args.resize,
      jpeg_quality=args.jpeg_quality, missing_caption=args.missing_caption,
      caption_choice=args.caption_choice, references=args.references,
      max_pixels=args.max_pixels)
  caption_files = list(args.captions)
  if args.captioner:
    caption_files.append(run_captioner(args, os.path.join(args.out, f"captions-{args.split}.jsonl")))
  captions = read_captions(caption_files) if caption_files else {}
  stats = build(args.input, options, captions, args.workers, args.tokenizer, args.vocab_size)
  print(json.dumps({k: stats[k] for k in ("written", "skipped", "reused_shards", "seconds")}))


if __name__ == "__main__":
  main()
