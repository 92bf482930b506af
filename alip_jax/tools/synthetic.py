"""The embedded default data: a procedural "noisy web" image–text corpus.

Every image is a small RGB scene (default 64×64): one to three coloured shapes
on a textured background. For each image we write

* a synthetic caption that describes it faithfully, except that with
  probability `caption_error_rate` one attribute is wrong (as a real
  captioner errs);
* a raw text that behaves like alt-text, of one of three kinds (the kind is
  kept in `meta.noise_kind`, for evaluation only):
    matched     names every object, terse, in web style;
    partial     names only part of the content, padded with junk
                (file names, shop words);
    mismatched  the alt-text of another image of the same split.
* for the evaluation splits, a clean reference caption (`captions`) and class
  labels of the largest object (`meta.label_shape`, `meta.label_color`);
* `meta.scene`, a canonical description: two images with the same scene id
  have interchangeable captions, so retrieval counts either as a hit.

Position words are vertical only (top / middle / bottom) because training uses
horizontal flips, which would make left/right descriptions wrong half the
time. Objects are listed in random order so that word order carries no
position.

Run `python -m alip_jax.tools.synthetic --out DIR` to build it; it also trains
the SentencePiece tokenizer on the training texts and writes `counts.json`.
`prepare(config, workdir)` builds it when `config.data.synthetic` and the
directory does not hold it yet: `alip_jax.main` and the demo call it before
training (the trainer reads data, it never builds it).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import time

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from PIL import Image, ImageDraw

from alip_jax import rundir
from alip_jax.data import records, tokenizer
from alip_jax.tools.synthetic_scenes import (  # noqa: F401  (public names of the corpus)
    COLOR_NAMES, COLORS, NOISE_KINDS, ROWS, SHAPES, SIZES, alt_text, caption_for, partial_text,
    queries_for, random_scene, scene_id)

@dataclasses.dataclass
class CorpusConfig:
  image_size: int = 64
  num_train: int = 12_000
  num_val: int = 500
  num_test: int = 1_000
  shards: int = 4
  caption_error_rate: float = 0.1
  # Shares of raw-text kinds, in NOISE_KINDS order.
  noise_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)
  # Regime knobs (docs/DATA.md, "Data regimes"). The defaults draw nothing
  # extra from the generator, so the default corpus stays byte-identical.
  caption_specificity: float = 1.0  # P(a caption names each attribute of each object)
  caption_hallucination_rate: float = 0.0  # P(a caption adds an object that is not there)
  alt_text_detail: float = 0.0  # P(an alt-text names an object's size and place too)
  # Extra test queries per evaluation record, in meta.queries[style]:
  # "caption" (the captioner's template), "alt" (web style), "human" (a
  # template family neither training text uses). () = none.
  query_styles: tuple[str, ...] = ()
  vocab_size: int = 512
  seed: int = 0
  jpeg_quality: int = 90


def _render(objects: list[dict], size: int, rng: np.random.Generator) -> Image.Image:
  """Textured background + shapes; drawn at 2× and downsampled (anti-alias)."""
  big = 2 * size
  # Low-saturation base (grey plus a small tint) so no shape colour vanishes.
  base = rng.integers(70, 170) + rng.integers(-18, 19, size=3)
  yy, xx = np.mgrid[0:big, 0:big] / big
  angle = rng.uniform(0, 2 * np.pi)
  gradient = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-30, 30)
  noise = rng.normal(0, 12, size=(big, big, 3))
  background = np.clip(base + gradient + noise, 0, 255).astype(np.uint8)
  image = Image.fromarray(background)
  draw = ImageDraw.Draw(image)
  cell = big / 3
  for obj in objects:
    radius = cell * (0.22 if obj["size"] == "small" else 0.42)
    cx = cell * (obj["column"] + 0.5) + rng.uniform(-0.06, 0.06) * cell
    cy = cell * (ROWS.index(obj["row"]) + 0.5) + rng.uniform(-0.06, 0.06) * cell
    jitter = rng.integers(-20, 21, size=3)
    fill = tuple(int(v) for v in np.clip(np.array(COLORS[obj["color"]]) + jitter, 0, 255))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if obj["shape"] == "circle":
      draw.ellipse(box, fill=fill)
    elif obj["shape"] == "square":
      draw.rectangle(box, fill=fill)
    elif obj["shape"] == "triangle":
      draw.polygon([(cx, cy - radius), (cx - radius, cy + radius),
                    (cx + radius, cy + radius)], fill=fill)
    else:  # cross
      arm = radius * 0.35
      draw.rectangle((cx - radius, cy - arm, cx + radius, cy + arm), fill=fill)
      draw.rectangle((cx - arm, cy - radius, cx + arm, cy + radius), fill=fill)
  return image.resize((size, size), Image.Resampling.BILINEAR)


def make_split(name: str, num: int, cfg: CorpusConfig, seed: int) -> list[dict]:
  """Generates the samples of one split (images encoded as JPEG)."""
  rng = np.random.default_rng(seed)
  # Test queries draw from their own stream: adding them leaves every
  # other byte of the corpus as it was.
  query_rng = np.random.default_rng([seed, 1])
  scenes = [random_scene(rng) for _ in range(num)]
  alt_texts = [alt_text(s, rng, cfg.alt_text_detail) for s in scenes]
  kinds = rng.choice(len(NOISE_KINDS), size=num, p=np.asarray(cfg.noise_mix) / sum(cfg.noise_mix))
  samples = []
  for i, objects in enumerate(scenes):
    kind = NOISE_KINDS[kinds[i]]
    if kind == "matched":
      raw = alt_texts[i]
    elif kind == "partial":
      raw = partial_text(objects, rng)
    else:
      other = (i + int(rng.integers(1, num))) % num if num > 1 else i
      raw = alt_texts[other]
    image = _render(objects, cfg.image_size, rng)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=cfg.jpeg_quality)
    largest = max(objects, key=lambda o: SIZES.index(o["size"]))
    sample = dict(
        key=f"{name}-{i:07d}", image=buf.getvalue(), raw_text=raw,
        caption=caption_for(objects, rng, cfg.caption_error_rate, cfg.caption_specificity,
                            cfg.caption_hallucination_rate),
        meta=dict(noise_kind=kind, num_objects=len(objects), scene=scene_id(objects),
                  label_shape=largest["shape"], label_color=largest["color"]))
    if name != "train":
      sample["captions"] = [caption_for(objects, rng, 0.0)]
      if cfg.query_styles:
        sample["meta"]["queries"] = queries_for(objects, cfg.query_styles, query_rng)
    samples.append(sample)
  return samples


def write_shards(samples: list[dict], out_dir: str, split: str, shards: int) -> list[str]:
  """Writes contiguous runs of `samples` to `shards` ArrayRecord files."""
  shards = max(1, min(shards, len(samples)))
  paths = []
  for s, chunk in enumerate(np.array_split(np.arange(len(samples)), shards)):
    path = os.path.join(out_dir, records.shard_name(split, s, shards))
    records.write_shard(path, (samples[i] for i in chunk))
    paths.append(path)
  return paths


def build(out_dir: str, cfg: CorpusConfig = CorpusConfig()) -> dict:
  """Builds all splits, the tokenizer and counts.json in `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  counts = {}
  train_texts = []
  for offset, (split, num) in enumerate(
      [("train", cfg.num_train), ("val", cfg.num_val), ("test", cfg.num_test)]):
    samples = make_split(split, num, cfg, seed=cfg.seed * 1000 + offset)
    write_shards(samples, out_dir, split, cfg.shards if split == "train" else 1)
    counts[split] = len(samples)
    if split == "train":
      train_texts = [t for s in samples for t in (s["raw_text"], s["caption"])]
  tokenizer.train_sentencepiece(train_texts, os.path.join(out_dir, "tokenizer.model"),
                                vocab_size=cfg.vocab_size)
  info = {"splits": counts, "config": dataclasses.asdict(cfg),
          "build_seconds": round(time.time() - start, 1)}
  with open(os.path.join(out_dir, "counts.json"), "w") as f:
    json.dump(info, f, indent=1)
  return info


def ensure_built(out_dir: str, cfg: CorpusConfig = CorpusConfig()) -> dict:
  """Builds the corpus unless `out_dir/counts.json` already describes it."""
  counts_path = os.path.join(out_dir, "counts.json")
  if os.path.exists(counts_path):
    with open(counts_path) as f:
      info = json.load(f)
    if info.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))):
      return info
  return build(out_dir, cfg)


def prepare(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The run's data directory (rundir.data_dir: `config.data.dir`, else
  WORKDIR/data), with the corpus built there first when
  `config.data.synthetic` (every host). Called before training by
  `alip_jax.main` and the demo; the trainer itself only reads."""
  data_dir = rundir.data_dir(config, workdir)
  if config.data.synthetic:
    corpus = CorpusConfig(num_train=config.data.synthetic_num_train)
    if jax.process_index() == 0:
      ensure_built(data_dir, corpus)
    multihost_utils.sync_global_devices("alip_jax:data_built")
    # Hosts that do not share process 0's disk (TPU VM workers: one process
    # each) build their own copy; the corpus is seeded, so all are the same.
    if jax.process_index() > 0 and not os.path.exists(os.path.join(data_dir, "counts.json")):
      ensure_built(data_dir, corpus)
    multihost_utils.sync_global_devices("alip_jax:data_built_everywhere")
  return data_dir


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output directory")
  for field in dataclasses.fields(CorpusConfig):
    if field.type in ("int", "float"):
      parser.add_argument(f"--{field.name}", type=eval(field.type), default=field.default)
  parser.add_argument("--noise_mix", default="0.5,0.25,0.25",
                      help="shares of matched,partial,mismatched raw texts")
  parser.add_argument("--query_styles", default="", help="e.g. caption,alt,human")
  args = parser.parse_args()
  fields = {k: v for k, v in vars(args).items() if k != "out"}
  fields["noise_mix"] = tuple(float(v) for v in args.noise_mix.split(","))
  fields["query_styles"] = tuple(v for v in args.query_styles.split(",") if v)
  cfg = CorpusConfig(**fields)
  info = build(args.out, cfg)
  print(json.dumps(info["splits"]), f"in {info['build_seconds']} s ->", args.out)


if __name__ == "__main__":
  main()
