"""The published 5-caption retrieval test sets, read without TensorFlow.

* **COCO**, Karpathy test split (5,000 images): TFDS `coco_captions`
  (config 2014), prepared once in ArrayRecord format with `tfds build
  coco_captions --file_format=array_record --data_dir DIR`; read here through
  `tfds.builder_from_directory`, so evaluation needs neither TensorFlow nor
  the network.
* **Flickr30k**, Karpathy test split (1,000 images): Karpathy's
  `dataset_flickr30k.json` beside the `flickr30k-images/` directory of the
  dataset, prepared locally (Flickr30k has no TFDS builder).

Each image keeps its first five captions in stored order (25,000 and 5,000
texts), each caption positive for its own image only: the protocol of the
published CLIP/ALIP retrieval tables. An image with fewer than five captions
is an error that names it, since its numbers would not be comparable.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from PIL import Image

from alip_jax import extras
from alip_jax.data import pipeline, web
from alip_jax.evaluation.retrieval import RetrievalSet

CAPTIONS_PER_IMAGE = 5
# (images, texts) of each published test split.
PROTOCOL_COUNTS = {"coco_captions:test": (5000, 25000), "flickr30k:test": (1000, 5000)}
FLICKR30K_JSON = "dataset_flickr30k.json"
FLICKR30K_IMAGES = "flickr30k-images"


def find_prepared(data_dir: str, name: str) -> str | None:
  """The newest prepared version directory of TFDS set `name` in data_dir
  (NAME/VERSION or NAME/CONFIG/VERSION holding dataset_info.json)."""
  found = [os.path.dirname(p) for pattern in ("*", os.path.join("*", "*"))
           for p in glob.glob(os.path.join(data_dir, name, pattern, "dataset_info.json"))]
  def version(path):
    parts = os.path.basename(path).split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()
  return max(found, key=version) if found else None


def build_set(items, tokenizer, image_size: int, source: str) -> RetrievalSet:
  """items: (key, PIL image, captions) per image → a RetrievalSet with the
  first CAPTIONS_PER_IMAGE captions of each image."""
  images, texts, text_image, keys = [], [], [], []
  for key, image, captions in items:
    captions = [c for c in (web.clean_text(c) for c in captions) if c]
    if len(captions) < CAPTIONS_PER_IMAGE:
      raise ValueError(f"{source}: image {key} has {len(captions)} non-empty captions; the "
                       f"5-caption protocol needs {CAPTIONS_PER_IMAGE} (is the set complete?)")
    for caption in captions[:CAPTIONS_PER_IMAGE]:
      texts.append(tokenizer.encode(caption))
      text_image.append(len(images))
    images.append(pipeline.eval_image(image.convert("RGB"), image_size))
    keys.append(key)
  if not images:
    raise ValueError(f"{source}: no images")
  return RetrievalSet(np.stack(images), np.stack(texts), np.asarray(text_image),
                      np.arange(len(images)), keys)


def coco_captions(data_dir: str, split: str, tokenizer, image_size: int,
                  max_items: int = 0) -> RetrievalSet:
  directory = find_prepared(data_dir, "coco_captions")
  if directory is None:
    raise FileNotFoundError(f"coco_captions is not prepared in {data_dir}: run `tfds build "
                            f"coco_captions --file_format=array_record --data_dir {data_dir}`")
  tfds = extras.require("tensorflow_datasets", "The coco_captions retrieval set")
  source = tfds.builder_from_directory(directory).as_data_source(split=split)
  count = min(max_items, len(source)) if max_items else len(source)

  def items():
    for index in range(count):
      record = source[index]
      captions = [t.decode("utf-8") if isinstance(t, bytes) else str(t)
                  for t in record["captions"]["text"]]
      yield f"coco id {int(record['image/id'])}", Image.fromarray(record["image"]), captions

  return build_set(items(), tokenizer, image_size, f"{directory} ({split})")


def flickr30k_karpathy(directory: str, split: str, tokenizer, image_size: int,
                       max_items: int = 0) -> RetrievalSet:
  json_path = os.path.join(directory, FLICKR30K_JSON)
  if not os.path.exists(json_path):
    raise FileNotFoundError(f"{json_path} not found: Flickr30k needs Karpathy's "
                            f"{FLICKR30K_JSON} beside {FLICKR30K_IMAGES}/ (docs/RESULTS.md)")
  with open(json_path) as f:
    entries = [e for e in json.load(f)["images"] if e["split"] == split]
  if max_items:
    entries = entries[:max_items]

  def items():
    for entry in entries:
      with Image.open(os.path.join(directory, FLICKR30K_IMAGES, entry["filename"])) as image:
        image.load()
        yield entry["filename"], image, [s["raw"] for s in entry["sentences"]]

  return build_set(items(), tokenizer, image_size, f"{json_path} ({split})")
