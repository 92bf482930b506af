"""Grain input pipeline: ArrayRecord triplets → global batches on the mesh.

  source → seeded global shuffle (new order every epoch) → repeat
  → this process's slice [process_index::process_count]
  → decode + validate one whole record → ALIP augmentation → tokenize
  → drop invalid records (counted, logged with their key)
  → batch(global_batch / process_count) → numpy dict per process

A record is decoded and checked as one unit, so a bad record is skipped as a
whole: its image can never be paired with another sample's texts. Every
batch carries the sample keys, which tests use to check alignment. The rules
for images and texts from the web (data/web.py) are listed in docs/DATA.md;
shards are opened one by one (records.ShardedSource) so that a truncated or
corrupt shard is named.

Images leave the pipeline as uint8 [H, W, 3]; CLIP mean/std normalisation
runs on the device (see models.two_towers.normalize_images), which cuts the
host→device traffic 4× compared with float32.
"""

from __future__ import annotations

import collections
import logging
import math
import threading

import grain
import jax
import numpy as np
from PIL import Image, ImageEnhance

from alip_jax.data import records
from alip_jax.data.web import MAX_PIXELS, ImageTooLarge, check_text, clean_text, load_image
from alip_jax.data.tokenizer import Tokenizer

# ALIP's random-resized crop (official DALI pipeline) and flip probability.
RRC_AREA = (0.7, 1.0)
RRC_ASPECT = (0.8, 1.25)
FLIP_PROB = 0.5

log = logging.getLogger(__name__)


class BadRecordCounter:
  """Counts skipped records by reason; logs the first few keys per reason.

  Counts are per process (and per Grain worker process when workers > 0).
  A record seen again in a later epoch is counted again.
  """

  def __init__(self, log_first: int = 10):
    self.counts = collections.Counter()
    self.examples = collections.defaultdict(list)
    self._log_first = log_first
    self._lock = threading.Lock()

  def __call__(self, element) -> bool:
    """Grain filter predicate: True keeps the element."""
    if "error" not in element:
      return True
    with self._lock:
      reason = element["error"]
      self.counts[reason] += 1
      if len(self.examples[reason]) < self._log_first:
        self.examples[reason].append(element["key"])
        log.warning("skipping record %s: %s (%s)", element["key"], reason,
                        element.get("detail", ""))
    return False

  @property
  def total(self) -> int:
    return sum(self.counts.values())


def _bad(key, reason, detail=""):
  return {"key": str(key), "error": reason, "detail": detail}


def decode_record(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 0) -> dict:
  """bytes → {"key", "image": PIL RGB, "raw_text", "caption", "captions", "meta"}
  with texts decoded and checked, or an error dict {"key", "error", "detail"}.
  `captions` (list of bytes/str) and `meta` (dict) are passed through as stored."""
  if data == records.UNREADABLE:
    return _bad("<unreadable>", "unreadable_record", "not readable from its shard (logged)")
  try:
    rec = records.decode(data)
  except Exception as e:  # pylint: disable=broad-except
    return _bad("<unreadable>", "unreadable_record", repr(e)[:200])
  if not isinstance(rec, dict):
    return _bad("<unreadable>", "unreadable_record", f"got {type(rec).__name__}")
  key = rec.get("key", "<no key>")
  for field in records.REQUIRED_FIELDS:
    if field not in rec:
      return _bad(key, f"missing_{field}")
  texts = {}
  for field in ("raw_text", "caption"):
    value, problem = check_text(rec[field])
    if problem:
      return _bad(key, f"{problem}_{field}")
    texts[field] = clean_text(value)
  if not isinstance(rec["image"], bytes):
    return _bad(key, "corrupt_image", f"image field is {type(rec['image']).__name__}, not bytes")
  try:
    image = load_image(rec["image"], max_pixels, min_side)
  except (ImageTooLarge, Image.DecompressionBombError) as e:
    return _bad(key, "image_too_large", str(e))
  except Exception as e:  # pylint: disable=broad-except
    return _bad(key, "corrupt_image", repr(e)[:200])
  return {"key": str(key), "image": image, **texts,
          "captions": rec.get("captions") or [], "meta": rec.get("meta") or {}}


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            area=RRC_AREA, aspect=RRC_ASPECT):
  """(left, top, right, bottom) as torchvision/DALI sample it (10 tries, then centre)."""
  total = width * height
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  for _ in range(10):
    target_area = total * rng.uniform(*area)
    ratio = math.exp(rng.uniform(*log_aspect))
    w = int(round(math.sqrt(target_area * ratio)))
    h = int(round(math.sqrt(target_area / ratio)))
    if 0 < w <= width and 0 < h <= height:
      left = int(rng.integers(0, width - w + 1))
      top = int(rng.integers(0, height - h + 1))
      return left, top, left + w, top + h
  ratio = width / height  # fallback: the largest centre crop within `aspect`
  if ratio < aspect[0]:
    w, h = width, int(round(width / aspect[0]))
  elif ratio > aspect[1]:
    w, h = int(round(height * aspect[1])), height
  else:
    w, h = width, height
  left, top = (width - w) // 2, (height - h) // 2
  return left, top, left + w, top + h


def train_image(image: Image.Image, size: int, rng: np.random.Generator,
                color_jitter: float = 0.0):
  """ALIP's training augmentation: RRC (bilinear) + horizontal flip, and
  optional colour jitter (brightness, contrast, saturation factors drawn from
  [1 − j, 1 + j]). Returns (uint8 image, augmentation vector): the crop box
  as fractions of the source (x, y, w, h), the flip bit and the three factors
  (1 when off) — what UniCLIP's augmentation-aware embedding reads."""
  width, height = image.width, image.height
  left, top, right, bottom = box = random_resized_crop_box(width, height, rng)
  image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
  flip = rng.random() < FLIP_PROB
  if flip:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  factors = [1.0, 1.0, 1.0]
  if color_jitter > 0:
    for i, enhancer in enumerate((ImageEnhance.Brightness, ImageEnhance.Contrast,
                                  ImageEnhance.Color)):
      factors[i] = float(rng.uniform(1 - color_jitter, 1 + color_jitter))
      image = enhancer(image).enhance(factors[i])
  aug = np.array([left / width, top / height, (right - left) / width,
                  (bottom - top) / height, float(flip), *factors], np.float32)
  return np.asarray(image, np.uint8), aug


EVAL_RESAMPLE = Image.Resampling.BICUBIC  # as CLIP; exports write it into their preprocessing


def eval_image(image: Image.Image, size: int) -> np.ndarray:
  """Resize the shorter side to `size`, centre-crop (bicubic, as CLIP)."""
  # The long side truncated, as transformers' and torchvision's resize
  # compute it: their preprocessing of an export then sees the same pixels.
  short, long = sorted((image.width, image.height))
  new_long = int(size * long / short)
  w, h = (size, new_long) if image.width <= image.height else (new_long, size)
  image = image.resize((w, h), EVAL_RESAMPLE)
  left, top = (w - size) // 2, (h - size) // 2
  return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


class TrainTransform(grain.transforms.RandomMap):
  """Record bytes → training example (or an error dict for the filter).

  With `num_views` = 2 (UniCLIP) the example also holds a second,
  independently augmented view `image_view2` and `aug` [2, 8]: each view's
  augmentation vector (see `train_image`)."""

  def __init__(self, tokenizer: Tokenizer, image_size: int, num_views: int = 1,
               color_jitter: float = 0.0, max_pixels: int = MAX_PIXELS):
    if num_views not in (1, 2):
      raise ValueError(f"num_views must be 1 or 2, got {num_views}")
    self.max_pixels = max_pixels
    self.tokenizer = tokenizer
    self.image_size = image_size
    self.num_views = num_views
    self.color_jitter = color_jitter

  def random_map(self, data: bytes, rng: np.random.Generator):
    # The smallest crop (area 0.7, aspect 0.8) spans ~0.75 of the shorter
    # side: large JPEGs are decoded at a reduced scale that still covers it.
    rec = decode_record(data, self.max_pixels, min_side=math.ceil(self.image_size / 0.74))
    if "error" in rec:
      return rec
    views = [train_image(rec["image"], self.image_size, rng, self.color_jitter)
             for _ in range(self.num_views)]
    example = {"key": rec["key"], "image": views[0][0],
               "raw_tokens": self.tokenizer.encode(rec["raw_text"]),
               "caption_tokens": self.tokenizer.encode(rec["caption"])}
    if self.num_views == 2:
      example["image_view2"] = views[1][0]
      example["aug"] = np.stack([v[1] for v in views])
    return example


def train_dataset(files: list[str] | records.ShardedSource, tokenizer: Tokenizer, image_size: int,
                  local_batch: int, seed: int, counter: BadRecordCounter,
                  process_index: int | None = None, process_count: int | None = None,
                  num_threads: int = 2, prefetch: int = 64, num_views: int = 1,
                  color_jitter: float = 0.0, skip_bad_shards: bool = False,
                  max_pixels: int = MAX_PIXELS, workers: int = 0) -> grain.IterDataset:
  """The infinite, shuffled training stream of this process's batches, from
  shard paths or from an already opened records.ShardedSource.

  `workers` > 0 decodes and augments in that many Grain worker processes
  (each with `num_threads` read threads). Worker w takes elements w, w + n, …
  of this process's stream and Grain interleaves them back in order; the
  bad-record filter and batching run here, after them, so the batches and
  the counts are the same for any number of workers."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  source = (files if isinstance(files, records.ShardedSource)
            else records.ShardedSource(files, skip_bad_shards))
  if len(source) < process_count:
    raise ValueError(f"{len(source)} training records cannot feed {process_count} processes")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  # Augmentation randomness is drawn from the record's place in the global
  # stream (before the per-process slice): the same for any process count.
  ds = ds.random_map(TrainTransform(tokenizer, image_size, num_views, color_jitter, max_pixels))
  ds = ds[process_index::process_count]
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=prefetch))
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  ds = ds.filter(counter)
  return ds.batch(local_batch, drop_remainder=True)


def to_global_batch(local_batch: dict, sharding) -> dict:
  """Host numpy batch → global jax.Arrays (keys stay on the host)."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items() if k != "key"}


def device_prefetch(ds: grain.IterDataset, sharding, buffer_size: int = 2) -> grain.IterDataset:
  """Batches → global arrays already on the devices, `buffer_size` ahead.

  A Grain prefetch thread makes the next batches' arrays (the host→device
  copy) while the step runs, so the step never waits on the transfer. Grain
  keeps each element's iterator state beside it: the state that checkpoints
  save is that of the last batch handed out, not of the read-ahead, so a
  resume continues at the same batch. The sample keys stay host strings
  under "key" (the trainer pops them before the step)."""
  ds = ds.map(lambda batch: {**to_global_batch(batch, sharding), "key": batch["key"]})
  return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=buffer_size)
