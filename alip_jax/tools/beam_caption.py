"""The captioner stage as an Apache Beam pipeline with RunInference: the
captions of alip_jax/tools/caption.py, from workers that each load the model
once.

  python -m alip_jax.tools.beam_caption --model models/blip-base \
      --input 'shards/*.tar' --out captions/train --num_shards 16 \
      --batch_size 64 --device cuda  [Beam options: --runner …]

  input files ─► ReadImages: (key, RGB image) per decodable image, in lists
    of --batch_size per file; Counts for missing / undecodable images
  ─► RunInference(CaptionHandler): caption.load_captioner once per worker
    process (RunInference's shared model), caption.caption_batch per list
  ─► (key hash mod N, (key, caption)) ─► GroupByKey ─► WriteCaptions:
    `{out}-0000j-of-0000N.jsonl`, rows {"key", "caption"} sorted by key

The files are the builder's `--captions` (a glob of them), which it joins by
key. Batches are made here, one list per RunInference element (its own
batching is told to take one element at a time): Beam's BatchElements emits
a bundle's last batch from finish_bundle, which Beam 2.77's DaskRunner drops.
Runs where torch and transformers are installed together with apache-beam
(the pipeline's Python: the torch venv here; on Dataflow a worker container
with them, see docs/DATA.md). Greedy decoding and one image per row of a
batch make the captions those of caption.run, caption for caption (tested).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from alip_jax.data import web
from alip_jax.tools import caption
from alip_jax.tools.beam_counts import counted, is_count, not_count, tally
from alip_jax.tools.inputs import Columns, expand, read_input


class Captioner:
  """(processor, model) in an object RunInference's shared model can hold
  (it keeps a weak reference: a tuple will not do)."""

  def __init__(self, processor, net):
    self.processor, self.net = processor, net


class CaptionHandler(ModelHandler):
  """RunInference's model: (processor, model) from a save_pretrained
  directory; an element is a list of (key, image), captioned as one batch."""

  def __init__(self, model_dir: str, device: str = "cpu", max_new_tokens: int = 30,
               num_beams: int = 1, prompt: str = ""):
    super().__init__()
    self.model_dir, self.device = model_dir, device
    self.generate = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, prompt=prompt)

  def load_model(self):
    return Captioner(*caption.load_captioner(self.model_dir, self.device))

  def run_inference(self, batch, model, inference_args=None):
    results = []
    for pairs in batch:
      texts = caption.caption_batch(model.processor, model.net, [image for _, image in pairs],
                                    **self.generate)
      results.append(PredictionResult(pairs, [(key, text) for (key, _), text in zip(pairs, texts)]))
    return results

  def batch_elements_kwargs(self):
    return {"min_batch_size": 1, "max_batch_size": 1}


def read_images(path: str, columns: Columns, batch_size: int, max_pixels: int):
  """→ lists of (key, RGB image) of up to batch_size, and Counts."""
  pairs, counts = [], collections.Counter()
  for key, image, _, _ in read_input(path, columns):
    if image is None:
      counts["missing_image"] += 1
      continue
    try:
      pairs.append((key, web.load_image(image, max_pixels)))
    except Exception:  # pylint: disable=broad-except
      counts["undecodable_image"] += 1
      continue
    if len(pairs) == batch_size:
      yield pairs
      pairs = []
  if pairs:
    yield pairs
  yield from counted(counts)


def shard_of(key: str, num_shards: int) -> int:
  return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"),
                                        digest_size=8).digest(), "big") % num_shards


def shard_path(out: str, shard: int, num_shards: int) -> str:
  return f"{out}-{shard:05d}-of-{num_shards:05d}.jsonl"


def write_captions(element, out: str, num_shards: int):
  shard, rows = element
  path = shard_path(out, shard, num_shards)
  with open(path + ".incomplete", "w") as f:
    for key, text in sorted(rows):
      f.write(json.dumps({"key": key, "caption": text}) + "\n")
  os.replace(path + ".incomplete", path)
  yield from counted(collections.Counter(captioned=len(rows)))


def caption_graph(pipeline, files, handler: CaptionHandler, out: str, num_shards: int,
                  columns: Columns = Columns(), batch_size: int = 32,
                  max_pixels: int = web.MAX_PIXELS):
  """Adds the stage to `pipeline`; its one sink writes `{out}-counts.json`."""
  read = (pipeline
          | "Inputs" >> beam.Create(list(files))
          | "ReadImages" >> beam.FlatMap(read_images, columns, batch_size, max_pixels))
  written = (read
             | "Batches" >> beam.Filter(not_count)
             | "Caption" >> RunInference(handler)
             | "ByShard" >> beam.FlatMap(lambda result: [
                 (shard_of(key, num_shards), (key, text)) for key, text in result.inference])
             | "GroupShards" >> beam.GroupByKey()
             | "WriteCaptions" >> beam.FlatMap(write_captions, out, num_shards))
  _ = ((read | "ReadCounts" >> beam.Filter(is_count), written)
       | "AllEnds" >> beam.Flatten()
       | "Tally" >> beam.CombineGlobally(tally).without_defaults()
       | "WriteCounts" >> beam.Map(lambda counts, path: open(path, "w").write(
           json.dumps(counts, sort_keys=True)), f"{out}-counts.json"))


def run(model_dir: str, inputs: list[str], out: str, num_shards: int = 1,
        beam_args=("--direct_running_mode=in_memory",), columns: Columns = Columns(),
        batch_size: int = 32, device: str = "cpu", **generate) -> dict:
  """Captions every decodable image of `inputs`; returns the counts."""
  from alip_jax.tools import beam_runners
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  counts_path = f"{out}-counts.json"
  if os.path.exists(counts_path):
    os.remove(counts_path)
  pipeline = beam_runners.new_pipeline(beam_runners.pipeline_options(list(beam_args)))
  caption_graph(pipeline, expand(inputs), CaptionHandler(model_dir, device, **generate), out,
                num_shards, columns, batch_size)
  beam_runners.run(pipeline)
  with open(counts_path) as f:
    return json.load(f)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   epilog="Any other flag is a Beam pipeline option.")
  caption.add_captioner_flags(parser)
  parser.add_argument("--out", required=True, help="prefix of the captions JSONL shards")
  parser.add_argument("--num_shards", type=int, default=1)
  args, beam_args = parser.parse_known_args(argv)
  stats = run(args.model, args.input, args.out, args.num_shards,
              beam_args or ["--direct_running_mode=in_memory"],
              Columns(args.key_column, args.image_column, args.text_column), args.batch_size,
              args.device, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
              prompt=args.prompt)
  print(json.dumps(stats))


if __name__ == "__main__":
  main()
