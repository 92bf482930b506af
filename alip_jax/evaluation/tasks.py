"""Zero-shot classification and the linear probe on TFDS datasets, run by
the evaluators (evaluation/evaluators.py) of `python -m alip_jax.evaluate`
and of the trainer's periodic evaluation; and the CLI's markdown table.

Each task takes host-side encoders (numpy in, L2-normalised numpy out, any
batch size) and returns a flat dict of numbers.
"""

from __future__ import annotations

import logging

import numpy as np

from alip_jax.evaluation import classification, prompts, tfds_sources

log = logging.getLogger(__name__)


def classnames_for(source: tfds_sources.ClassificationSource, classnames_file: str = "") -> list[str]:
  """The class names used in prompts: `classnames_file`, else
  <name>_classes.txt when we ship one (alip_jax/evaluation/prompts/), else
  TFDS's label names."""
  shipped = f"{source.name}_classes.txt"
  if classnames_file:
    names, origin = tfds_sources.read_names(classnames_file), classnames_file
  elif (names := prompts.read(shipped)) is not None:
    origin = f"alip_jax/evaluation/prompts/{shipped}"
  else:
    names, origin = source.classnames, f"TFDS's label names of {source.name}"
  if len(names) != len(source.classnames):
    raise ValueError(f"{origin}: {len(names)} class names, but {source.name} has "
                     f"{len(source.classnames)} classes")
  if tfds_sources.looks_like_ids(names):
    raise ValueError(f"{source.name}'s labels are WordNet ids, not words: pass a class-name "
                     f"file (one name per line, in label order) as classnames")
  return names


def run_zeroshot(encode_image, encode_text, spec: str, image_size: int, batch_size: int,
                 tfds_data_dir: str = "", classnames_file: str = "",
                 templates_file: str = "", max_items: int = 0) -> dict:
  """Zero-shot top-1/top-5/mean per-class accuracy on a TFDS split. Prompts:
  `templates_file`, else <name>_templates.txt when we ship one, else
  templates.txt (both in alip_jax/evaluation/prompts/)."""
  source = tfds_sources.open_source(*tfds_sources.parse_spec(spec), data_dir=tfds_data_dir)
  names = classnames_for(source, classnames_file)
  templates = (tfds_sources.read_names(templates_file) if templates_file else
               prompts.read(f"{source.name}_templates.txt") or prompts.read("templates.txt"))
  class_emb = classification.class_embeddings(lambda t: encode_text(t, batch_size), names,
                                              templates)
  image_emb, labels = tfds_sources.embed(lambda x: encode_image(x, batch_size), source.source,
                                         image_size, batch_size, max_items)
  metrics = classification.zeroshot_metrics(image_emb, labels, class_emb)
  metrics.update(num_classes=len(names), num_templates=len(templates))
  return metrics


def run_linear_probe(encode_image, spec: str, image_size: int, batch_size: int,
                     tfds_data_dir: str = "", val_fraction: float = 0.2, max_items: int = 0,
                     seed: int = 0) -> dict:
  """`spec` = NAME:TRAIN_SPLIT:TEST_SPLIT. The validation split for the L2
  sweep is a seeded `val_fraction` of the training features."""
  name, train_split, test_split = (spec.split(":") + ["", ""])[:3]
  if not (name and train_split and test_split):
    raise ValueError(f"linear probe spec {spec!r}: expected NAME:TRAIN_SPLIT:TEST_SPLIT, "
                     f"e.g. cifar10:train:test")
  train = tfds_sources.open_source(name, train_split, data_dir=tfds_data_dir)
  test = tfds_sources.open_source(name, test_split, data_dir=tfds_data_dir)
  encode = lambda x: encode_image(x, batch_size)  # noqa: E731
  train_x, train_y = tfds_sources.embed(encode, train.source, image_size, batch_size, max_items)
  test_x, test_y = tfds_sources.embed(encode, test.source, image_size, batch_size, max_items)
  order = np.random.default_rng(seed).permutation(len(train_x))
  num_val = max(1, int(round(val_fraction * len(train_x))))
  val, fit = order[:num_val], order[num_val:]
  return classification.linear_probe(train_x[fit], train_y[fit], train_x[val], train_y[val],
                                     test_x, test_y, len(train.classnames))


def markdown_table(results: dict) -> str:
  """{task: {metric: value}} → a markdown table (accuracies and recalls in %)."""
  lines = ["| task | metric | value |", "|---|---|---|"]
  for task, metrics in results.items():
    if not isinstance(metrics, dict):
      continue
    for metric, value in metrics.items():
      percent = isinstance(value, float) and ("R@" in metric or "top" in metric or
                                              "accuracy" in metric or "per_class" in metric)
      shown = f"{100 * value:.2f} %" if percent else (f"{value:.3g}" if isinstance(value, float)
                                                       else str(value))
      lines.append(f"| {task} | {metric} | {shown} |")
  return "\n".join(lines) + "\n"
