"""Throughput of the input pipeline against a bare decode loop.

  python -m alip_jax.benchmarks.input_pipeline [--data DIR] [--records 2000]
      [--source_size 320] [--image_size 224] [--workers 0,1,2] [--seconds 15]

Without --data it writes `--records` triplets with JPEG photos of
`--source_size` pixels (noise, gradients and shapes, about the entropy and
file size of web photos) to a temporary directory, removed at the end. Then it prints records/s of

* the anchor: a bare loop on one core — msgpack decode, PIL open, full
  decode to RGB — over the same records (and simplejpeg, if installed);
* the whole training pipeline (read → decode → random-resized crop + flip →
  tokenize → filter → batch) with `workers` Grain processes (0: in this
  process, one read thread), measured after a warm-up;

and the ratio of pipeline to bare-decode cost per core, and how many cores
feed a given step rate (`--feed`, samples/s; default: the 1,468 triplets/s of
B/16 on one H100, docs/BENCHMARKS.md). CPU figures from one run are ratios to
compare; take absolute ones from the machine you will train on.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def write_records(out: str, count: int, size: int, seed: int = 0) -> list[str]:
  """`count` triplets with photo-like JPEGs in one shard, and a tokenizer."""
  from array_record.python.array_record_module import ArrayRecordWriter
  from PIL import Image, ImageDraw
  from alip_jax.data import records, tokenizer
  rng = np.random.default_rng(seed)
  path = os.path.join(out, "train-00000-of-00001.array_record")
  writer = ArrayRecordWriter(path, "group_size:1")
  yy, xx = np.mgrid[0:size, 0:size] / size
  texts = []
  for i in range(count):
    base = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(3)], -1)
    pixels = (127 + 80 * base + rng.normal(0, 18, (size, size, 3))).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
      x, y = rng.integers(0, size, 2)
      r = int(rng.integers(size // 10, size // 3))
      draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    raw, caption = f"photo {i} | free download", f"a picture of three round shapes number {i}"
    texts += [raw, caption]
    writer.write(records.encode(dict(key=f"bench-{i:06d}", image=buffer.getvalue(),
                                     raw_text=raw, caption=caption)))
  writer.close()
  tokenizer.train_sentencepiece(texts, os.path.join(out, "tokenizer.model"), vocab_size=200)
  return [path]


def bare_decode_rate(files: list[str], seconds: float, decoder: str = "pil") -> tuple[float, float]:
  """(records/s, mean encoded bytes) of msgpack + full RGB decode on one core."""
  import grain
  from PIL import Image
  from alip_jax.data import records
  source = grain.sources.ArrayRecordDataSource(files)
  if decoder == "simplejpeg":
    import simplejpeg
    decode = lambda data: simplejpeg.decode_jpeg(data, colorspace="RGB")  # noqa: E731
  else:
    decode = lambda data: Image.open(io.BytesIO(data)).convert("RGB")  # noqa: E731
  count, total_bytes, start = 0, 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    record = records.decode(source[count % len(source)])
    decode(record["image"])
    count += 1
    total_bytes += len(record["image"])
  return count / (time.perf_counter() - start), total_bytes / count


def pipeline_rate(files, tokenizer, image_size: int, batch: int, workers: int,
                  seconds: float) -> float:
  from alip_jax.data import pipeline
  iterator = iter(pipeline.train_dataset(
      files, tokenizer, image_size, batch, seed=0, counter=pipeline.BadRecordCounter(),
      process_index=0, process_count=1, num_threads=1, prefetch=2 * batch, workers=workers))
  for _ in range(3):  # warm-up: worker start-up, first reads
    next(iterator)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch
  rate = count / (time.perf_counter() - start)
  iterator.close()
  return rate


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data", help="an ArrayRecord directory (default: generated)")
  parser.add_argument("--records", type=int, default=2000)
  parser.add_argument("--source_size", type=int, default=320)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--seconds", type=float, default=15.0)
  parser.add_argument("--feed", type=float, default=1468.0,
                      help="samples/s a step consumes (default: B/16, one H100)")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # Grain reads absl flags
  from PIL import features
  from alip_jax.data import records
  from alip_jax.data.tokenizer import Tokenizer

  data = args.data or tempfile.mkdtemp(prefix="alip_bench_")
  if not args.data:
    start = time.perf_counter()
    write_records(data, args.records, args.source_size)
    print(f"wrote {args.records} records ({args.source_size} px JPEG) to {data} in "
          f"{time.perf_counter() - start:.0f} s")
  files = records.split_files(data, "train").files
  tokenizer = Tokenizer(os.path.join(data, "tokenizer.model"), 77)
  print(f"cores: {os.cpu_count()}, Pillow libjpeg-turbo: "
        f"{features.check_feature('libjpeg_turbo')}")

  anchor, mean_bytes = bare_decode_rate(files, args.seconds)
  print(f"bare PIL decode, 1 core:      {anchor:8.1f} records/s  ({mean_bytes / 1024:.0f} KiB/image)")
  try:
    simple, _ = bare_decode_rate(files, args.seconds, "simplejpeg")
    print(f"bare simplejpeg decode:       {simple:8.1f} records/s  ({simple / anchor:.2f}× PIL)")
  except ImportError:
    print("simplejpeg not installed: skipped")
  per_core = None
  for workers in (int(w) for w in args.workers.split(",")):
    rate = pipeline_rate(files, tokenizer, args.image_size, args.batch, workers, args.seconds)
    # workers = 0 and 1 do all the work on one core.
    cost = f"  cost {anchor / rate:.2f}× bare decode per core" if workers <= 1 else ""
    print(f"pipeline, workers={workers}:         {rate:8.1f} records/s{cost}")
    if workers == 1:
      per_core = rate
  if per_core:
    print(f"cores to feed {args.feed:.0f} samples/s at this rate: {args.feed / per_core:.1f}")
  if not args.data:
    shutil.rmtree(data)  # the generated records


if __name__ == "__main__":
  main()
