"""Build ArrayRecord triplet shards from the data people have, as an Apache
Beam pipeline: the same code runs on this machine (Beam's Python
DirectRunner, several processes) and on a cluster (Dataflow, Flink, Spark).

  python -m alip_jax.tools.build --input 'laion/{00000..00099}.tar' \
      --captions captions.jsonl --out data/laion --num_shards 64 --resize 256 \
      --direct_num_workers 8

Inputs (`--input`, globs; braces expand; gs:// and other Beam file systems
too): webdataset tars as img2dataset writes them (KEY.jpg|png|webp…,
KEY.txt, KEY.json; a key's members anywhere in the archive), and tables —
Parquet, CSV, TSV, JSONL — with a key column, a text column and an image
column that holds encoded bytes (or a {"bytes": …} struct, as HF datasets
write) or a path inside the table's directory. Synthetic captions come from
`--captions` (JSONL or Parquet with `key` and `caption`: a string or a
list), joined by key; or `--captioner DIR` first captions every image with a
local HF image-to-text model (alip_jax/tools/caption.py).

Output in `--out`: `{split}-0000j-of-0000N.array_record` (records go to shard
hash(key) mod N, sorted by key inside it), `stats.json` (records written,
skipped by reason, shard sizes), `counts.json` (what the trainer reads and
checks the shard files against), `manifest.json` (inputs with sizes and
mtimes, options, tokenizer hash, records per shard) and `tokenizer.model`.
A re-run into an `--out` built from other inputs or options is refused
unless `--overwrite`; an identical re-run keeps finished shards. The graph:
beam_build.py; the rules: docs/DATA.md. Every other flag is a Beam pipeline
option (`--runner`, `--project`, `--temp_location`, …).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time

from alip_jax import extras

extras.require_beam("alip-build (the dataset builder)")

from alip_jax.data import web  # noqa: E402 -- after the check of the [build] extra
from alip_jax.data.records import shard_name
from alip_jax.data.tokenizer import SPECIAL_TOKENS
from alip_jax.tools import beam_runners, caption
from alip_jax.tools.beam_runners import pipeline_options
from alip_jax.tools.manifest import (check_out, describe_files, identity, join, open_any,
                                     read_bytes, read_json, sha256, write_bytes, write_json)
from alip_jax.tools.inputs import BadInputError, Columns, Limits, check_table
from alip_jax.tools.tar_reader import TarError

log = logging.getLogger(__name__)

@dataclasses.dataclass
class BuildOptions:
  """Everything that decides the output (it goes into the manifest)."""
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
  max_member_bytes: int = 64 << 20  # tar member / table image file, checked before reading
  max_text_chars: int = 4096      # longer texts (after cleaning) are skipped: too_long_*
  skip_bad_members: bool = False  # damaged tars: count and resync instead of failing
  allow_outside_paths: bool = False
  seed: int = 0

  def validate(self) -> None:
    problems = []
    if not re.fullmatch(r"[A-Za-z0-9_]+", self.split):
      problems.append(f"--split {self.split!r}: letters, digits and _ only")
    for name, low, high in (("num_shards", 1, 99999), ("resize", 0, None), ("jpeg_quality", 1, 100),
                            ("max_pixels", 1, None), ("max_member_bytes", 1, None),
                            ("max_text_chars", 1, None)):
      value = getattr(self, name)
      if value < low or (high is not None and value > high):
        problems.append(f"--{name} {value}: must be >= {low}" + (f" and <= {high}" if high else ""))
    if self.missing_caption not in ("drop", "raw"):
      problems.append(f"--missing_caption {self.missing_caption!r}: 'drop' or 'raw'")
    if self.caption_choice not in ("first", "random"):
      problems.append(f"--caption_choice {self.caption_choice!r}: 'first' or 'random'")
    if problems:
      raise ValueError("invalid options: " + "; ".join(problems))

  def columns(self) -> Columns:
    return Columns(self.key_column, self.image_column, self.text_column)

  def limits(self) -> Limits:
    return Limits(self.max_member_bytes, self.skip_bad_members, self.allow_outside_paths)


# ---- The whole build.

def run_pipeline(files, caption_files, options: BuildOptions, beam_options) -> dict[str, int]:
  """Runs the graph; returns its counts (skips by reason, reused shards)."""
  from alip_jax.tools import beam_build
  path = beam_build.counters_path(options.out, options.split)
  write_bytes(path, b"{}")  # a stale file must not stand in for this run's
  pipeline = beam_runners.new_pipeline(beam_options)
  beam_build.build_graph(pipeline, files, caption_files, options, options.columns(),
                         options.limits())
  beam_runners.run(pipeline, (TarError, BadInputError))
  return read_json(path, {})


def build(inputs: list[str], options: BuildOptions, caption_files: list[str] = (),
          beam_args: list[str] = ("--direct_running_mode=in_memory",),
          tokenizer: str | None = None, vocab_size: int = 32000, overwrite: bool = False) -> dict:
  """Builds one split into options.out; returns its stats (also in stats.json)."""
  options.validate()
  if not tokenizer and vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"--vocab_size {vocab_size}: must exceed the special tokens "
                     f"{SPECIAL_TOKENS} by one piece per distinct character of the texts")
  start = time.time()
  described = describe_files(list(inputs))
  if not described:
    raise FileNotFoundError(f"no input files match {list(inputs)}")
  captions = describe_files(list(caption_files))
  files = [f["path"] for f in described]
  for path in files:  # wrong column types fail here, before any worker starts
    check_table(path, options.columns(), open_any)
  if "://" not in options.out:
    os.makedirs(os.path.join(options.out, ".build"), exist_ok=True)
  wanted = identity(described, captions, options, tokenizer, vocab_size)
  check_out(options.out, options.split, wanted, overwrite)
  manifest = read_json(join(options.out, "manifest.json"), {})
  manifest[options.split] = {"build": wanted, "complete": False}
  write_json(join(options.out, "manifest.json"), manifest)

  counters = run_pipeline(files, [c["path"] for c in captions], options,
                          pipeline_options(list(beam_args)))
  shards = {}
  for shard in range(options.num_shards):
    name = shard_name(options.split, shard, options.num_shards)
    shards[name] = read_json(join(options.out, ".build", name + ".json"), None)
    if shards[name] is None:
      raise RuntimeError(f"shard {name} was not written (see the pipeline's log)")
  written = sum(s["records"] for s in shards.values())
  tokenizer_info = make_tokenizer(options, tokenizer, vocab_size, written)
  reused = counters.pop("reused_shards", 0)
  caption_from_raw = counters.pop("caption_from_raw", 0)  # written, only flagged
  stats = {"split": options.split, "written": written, "skipped": dict(sorted(counters.items())),
           "caption_from_raw": caption_from_raw, "shards": shards, "reused_shards": reused,
           "seconds": round(time.time() - start, 1), "options": dataclasses.asdict(options)}
  # One entry per split, so train and eval splits can be built into one directory.
  all_stats = read_json(join(options.out, "stats.json"), {})
  all_stats[options.split] = stats
  counts = read_json(join(options.out, "counts.json"), {})
  counts.setdefault("splits", {})[options.split] = written
  counts.setdefault("shards", {})[options.split] = {n: s["records"] for n, s in shards.items()}
  manifest[options.split] = {"build": wanted, "complete": True, "tokenizer": tokenizer_info,
                             "shards": counts["shards"][options.split]}
  for name, data in (("stats.json", all_stats), ("counts.json", counts),
                     ("manifest.json", manifest)):
    write_json(join(options.out, name), data)
  return stats


def make_tokenizer(options: BuildOptions, tokenizer: str | None, vocab_size: int,
                   written: int) -> dict:
  """tokenizer.model in --out: a copy of `tokenizer`, the one already there
  (a second split reuses the first's), or trained on the build's text sample."""
  path = join(options.out, "tokenizer.model")
  if tokenizer:
    data = read_bytes(tokenizer)
    if read_bytes(path) != data:
      write_bytes(path, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "copied_from": tokenizer}
  existing = sha256(path)
  if existing:
    manifest = read_json(join(options.out, "manifest.json"), {})
    trained_on = next((s for s, m in manifest.items() if m.get("tokenizer", {}).get(
        "sha256") == existing), None)
    return {"sha256": existing, "trained_on": trained_on or "unknown"}
  if not written:
    raise ValueError(f"no record was written to split {options.split!r}, so there are no "
                     f"texts to train a tokenizer on; see stats.json for the skips, or give "
                     f"--tokenizer")
  from alip_jax.data.tokenizer import train_sentencepiece
  texts = read_json(join(options.out, ".build", f"{options.split}-tokenizer-texts.json"), [])
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "tokenizer.model")
    train_sentencepiece([web.clean_text(t) for t in texts], local, vocab_size=vocab_size)
    with open(local, "rb") as f:
      data = f.read()
  write_bytes(path, data)
  return {"sha256": hashlib.sha256(data).hexdigest(), "trained_on": options.split}


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      epilog="Any other flag is a Beam pipeline option, e.g. --direct_num_workers 8, or "
             "--runner DataflowRunner --project P --region R --temp_location gs://…")
  parser.add_argument("--input", action="append", required=True, help="tar/table files (globs)")
  parser.add_argument("--out", required=True)
  parser.add_argument("--overwrite", action="store_true",
                      help="replace this split in --out if it was built from something else")
  parser.add_argument("--captions", action="append", default=[],
                      help="JSONL/Parquet with key, caption (several per key allowed)")
  parser.add_argument("--captioner", help="caption the inputs first with this local HF "
                      "image-to-text model (alip_jax/tools/caption.py)")
  parser.add_argument("--captioner_python", default=sys.executable,
                      help="a Python with torch and transformers, for --captioner")
  parser.add_argument("--captioner_args", default="",
                      help="more flags for the captioner, e.g. '--device cuda --batch_size 64'")
  parser.add_argument("--tokenizer", help="an existing SentencePiece model to copy")
  parser.add_argument("--vocab_size", type=int, default=32000)
  defaults = BuildOptions(out="")
  for field in dataclasses.fields(BuildOptions):
    if field.name == "out":
      continue
    value = getattr(defaults, field.name)
    if isinstance(value, bool):
      parser.add_argument(f"--{field.name}", action="store_true")
    else:
      parser.add_argument(f"--{field.name}", type=type(value), default=value)
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  options = BuildOptions(out=args.out, **{f.name: getattr(args, f.name)
                                          for f in dataclasses.fields(BuildOptions)
                                          if f.name != "out"})
  caption_files = list(args.captions)
  try:
    options.validate()
    pipeline_options(beam_args)
    if args.captioner:
      os.makedirs(args.out, exist_ok=True)
      caption_files.append(caption.run_in_python(
          args.captioner_python, args.captioner, args.input,
          os.path.join(args.out, f"captions-{args.split}.jsonl"),
          ["--image_column", args.image_column, "--key_column", args.key_column,
           *args.captioner_args.split()]))
    stats = build(args.input, options, caption_files, beam_args, args.tokenizer,
                  args.vocab_size, args.overwrite)
  except (ValueError, FileExistsError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(json.dumps({k: stats[k] for k in ("written", "skipped", "reused_shards", "seconds")}))


if __name__ == "__main__":
  main()
