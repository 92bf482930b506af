"""Benchmark suites for `alip-eval --benchmark NAME`: the sets that published
CLIP tables report, evaluated by the same protocols.

`core`:
  zero-shot  imagenet2012:validation (50,000 images; OpenAI's 1,000 class
             names and 80 templates), cifar10:test and cifar100:test (10,000
             each; the shipped class names, the default templates)
  retrieval  coco_captions:test (Karpathy 5k: 5,000 images, 25,000
             captions) and flickr30k:test (Karpathy 1k: 1,000 and 5,000)

A set runs when it is prepared (TFDS sets in the TFDS data directory,
Flickr30k in its own directory); the others are listed with what to do, and
a suite with none prepared is an error. Every result carries its counts and,
for the published splits, `matches_protocol` (counts equal to the published
split's), so a partial set cannot pass for the real one.
"""

from __future__ import annotations

import logging
import os

from alip_jax.evaluation import retrieval, retrieval_sets, tasks

log = logging.getLogger(__name__)

SUITES = {"core": {"zeroshot": ("imagenet2012:validation", "cifar10:test", "cifar100:test"),
                   "retrieval": ("coco_captions:test", "flickr30k:test")}}
ZEROSHOT_COUNTS = {"imagenet2012:validation": 50_000, "cifar10:test": 10_000,
                   "cifar100:test": 10_000}


def default_tfds_dir(tfds_data_dir: str = "") -> str:
  return tfds_data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser(
      "~/tensorflow_datasets")


def missing_reason(task: str, spec: str, tfds_dir: str, flickr30k_dir: str) -> str | None:
  """None when `spec` is prepared, else what to do about it."""
  name = spec.split(":")[0]
  if task == "retrieval" and name == "flickr30k":
    if os.path.exists(os.path.join(flickr30k_dir, retrieval_sets.FLICKR30K_JSON)):
      return None
    return (f"no {retrieval_sets.FLICKR30K_JSON} in {flickr30k_dir}: put Karpathy's split file "
            f"beside {retrieval_sets.FLICKR30K_IMAGES}/ there (or pass --flickr30k_dir)")
  if retrieval_sets.find_prepared(tfds_dir, name):
    return None
  manual = " (its archives in DIR/downloads/manual first)" if name == "imagenet2012" else ""
  return (f"{name} is not prepared in {tfds_dir}: run `tfds build {name} "
          f"--file_format=array_record --data_dir {tfds_dir}`{manual}")


def run_suite(suite: dict, encode_image, encode_text, tokenizer, image_size: int,
              batch_size: int, tfds_data_dir: str = "", flickr30k_dir: str = "",
              max_items: int = 0) -> tuple[dict, dict]:
  """({'zeroshot/<spec>' | 'retrieval/<spec>': metrics}, {spec: why skipped}).
  encode_*(inputs, batch_size) → L2-normalised numpy, as tasks.py takes."""
  tfds_dir = default_tfds_dir(tfds_data_dir)
  flickr30k_dir = flickr30k_dir or os.path.join(tfds_dir, "flickr30k")
  readers = {"coco_captions": lambda split: retrieval_sets.coco_captions(
                 tfds_dir, split, tokenizer, image_size, max_items),
             "flickr30k": lambda split: retrieval_sets.flickr30k_karpathy(
                 flickr30k_dir, split, tokenizer, image_size, max_items)}
  results, missing = {}, {}
  for task in ("zeroshot", "retrieval"):
    for spec in suite.get(task, ()):
      reason = missing_reason(task, spec, tfds_dir, flickr30k_dir)
      if reason:
        missing[spec] = reason
        log.warning("benchmark: skipping %s: %s", spec, reason)
        continue
      if task == "zeroshot":
        metrics = tasks.run_zeroshot(encode_image, encode_text, spec, image_size, batch_size,
                                     tfds_dir, max_items=max_items)
        expected = ZEROSHOT_COUNTS.get(spec)
        if expected is not None:
          metrics["matches_protocol"] = metrics["num_images"] == expected
      else:
        name, split = spec.split(":")
        data = readers[name](split)
        metrics = retrieval.retrieval_metrics(
            encode_image(data.images, batch_size), encode_text(data.texts, batch_size),
            data.text_image)
        metrics.update(num_images=len(data.images), num_texts=len(data.texts))
        expected = retrieval_sets.PROTOCOL_COUNTS.get(spec)
        if expected is not None:
          metrics["matches_protocol"] = (len(data.images), len(data.texts)) == expected
      if metrics.get("matches_protocol") is False:
        log.warning("benchmark: %s has other counts than the published split: its numbers "
                    "are not comparable with published tables", spec)
      results[f"{task}/{spec}"] = metrics
  if not results:
    raise FileNotFoundError("no set of the benchmark is prepared:\n" + "\n".join(
        f"  {spec}: {reason}" for spec, reason in missing.items()))
  return results, missing
