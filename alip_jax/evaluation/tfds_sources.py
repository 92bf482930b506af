"""Image classification sets through TFDS *data sources* (no TensorFlow).

A set is prepared once in ArrayRecord format, e.g.

  tfds build cifar10 --file_format=array_record --data_dir=~/tensorflow_datasets

(manual-download sets such as imagenet2012 need their archives in
`<data_dir>/downloads/manual` first: see docs/RESULTS.md). Evaluation then reads
records by index with `tfds.data_source` and decodes and preprocesses them in
Grain worker threads; nothing is downloaded at evaluation time.

A spec names a set and a split: 'cifar10:test', 'imagenet2012:validation',
or a slice, 'cifar10:train[:45000]'.
"""

from __future__ import annotations

import dataclasses
import re

import grain
import numpy as np
from PIL import Image

from alip_jax import extras, progress
from alip_jax.data import pipeline
from alip_jax.evaluation import prompts


@dataclasses.dataclass
class ClassificationSource:
  name: str
  split: str
  source: object          # random-access: source[i] → {"image": uint8 [H, W, 3], "label": int}
  classnames: list[str]

  def __len__(self):
    return len(self.source)


def parse_spec(spec: str) -> tuple[str, str]:
  name, _, split = spec.partition(":")
  if not name or not split:
    raise ValueError(f"dataset spec {spec!r}: expected NAME:SPLIT, e.g. cifar10:test")
  return name, split


def open_source(name: str, split: str, data_dir: str | None = None, image_key: str = "image",
                label_key: str = "label") -> ClassificationSource:
  tfds = extras.require("tensorflow_datasets", f"The TFDS evaluation set {name}")
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # not registered and not found in data_dir
    raise FileNotFoundError(
        f"TFDS dataset {name!r} not found in {data_dir or '~/tensorflow_datasets'}: prepare it "
        f"with `tfds build {name} --file_format=array_record --data_dir=DIR` and pass "
        f"that DIR ({e})") from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name} "
        f"--file_format=array_record --data_dir=DIR` (no download happens at evaluation)")
  features = builder.info.features
  for key in (image_key, label_key):
    if key not in features:
      raise KeyError(f"{name} has no feature {key!r} (it has {sorted(features)})")
  names = [n.replace("_", " ") for n in features[label_key].names]
  source = builder.as_data_source(split=split)
  return ClassificationSource(name, split, _Fields(source, image_key, label_key), names)


class _Fields:
  """A data source reduced to (image, label) under fixed keys."""

  def __init__(self, source, image_key, label_key):
    self.source, self.image_key, self.label_key = source, image_key, label_key

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    record = self.source[index]
    return {"image": record[self.image_key], "label": int(record[self.label_key])}


def read_names(path: str) -> list[str]:
  """One entry per line; blank lines and '#' comments are ignored."""
  with open(path, encoding="utf-8") as f:
    return prompts.parse_names(f.read())


def looks_like_ids(classnames: list[str]) -> bool:
  """WordNet ids (n01440764): imagenet2012's label names, useless as prompts."""
  return all(re.fullmatch(r"n\d{8}", n) for n in classnames)


def batches(source, image_size: int, batch_size: int, num_threads: int = 8,
            max_items: int = 0):
  """(uint8 images [B, S, S, 3], int labels [B]) in dataset order, every item
  exactly once (the last batch is short). Decode and resize run in Grain
  threads."""
  def preprocess(record):
    image = record["image"]
    image = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).convert("RGB")
    return pipeline.eval_image(image, image_size), np.int32(record["label"])

  ds = grain.MapDataset.source(source)
  if max_items:
    ds = ds[:max_items]
  ds = ds.map(preprocess).to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                           prefetch_buffer_size=2 * batch_size))
  images, labels = [], []
  for image, label in ds:
    images.append(image)
    labels.append(label)
    if len(images) == batch_size:
      yield np.stack(images), np.asarray(labels)
      images, labels = [], []
  if images:
    yield np.stack(images), np.asarray(labels)


def embed(encode_image, source, image_size: int, batch_size: int, max_items: int = 0):
  """(features [N, D], labels [N]) for the whole split (or its first max_items)."""
  features, labels = [], []
  count = min(max_items, len(source)) if max_items else len(source)
  for images, batch_labels in progress.bar(
      batches(source, image_size, batch_size, max_items=max_items),
      total=-(-count // batch_size), desc="images", unit="batch"):
    features.append(np.asarray(encode_image(images)))
    labels.append(batch_labels)
  return np.concatenate(features), np.concatenate(labels)
