"""Evaluators: built once (their data loaded once), each with
`run(params) -> metrics`.

The trainer builds its list from the config (`from_config`: retrieval on
the eval split, then `config.eval.zeroshot`, then `config.eval.linear_probe`)
and runs it every `train.eval_every` steps and at the end; `python -m
alip_jax.evaluate` builds the same evaluators from its flags. An evaluator
embeds through `Encoders`, host-side functions of the params it is given.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from alip_jax import mesh as mesh_lib, state as state_lib
from alip_jax.data import records
from alip_jax.evaluation import retrieval, tasks

# (params, uint8 images [N, S, S, 3] or texts (list of str, or token ids
# [N, L]), batch size) → L2-normalised float32 [N, D], for any N.
Encode = Callable[[Any, Any, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Encoders:
  image: Encode
  text: Encode


def padded_encoders(model, mesh, param_sharding, tokenizer) -> Encoders:
  """The trainer's: `state.make_encoders` on fixed-size batches sharded over
  data × fsdp, the last batch padded (`retrieval.embed_in_batches`)."""
  encode_image, encode_text = state_lib.make_encoders(model, mesh, param_sharding)
  sharding = mesh_lib.batch_sharding(mesh)

  def image(params, images, batch_size):
    return retrieval.embed_in_batches(lambda b: encode_image(params, b), images, batch_size,
                                      sharding, "images")

  def text(params, texts, batch_size):
    tokens = texts if isinstance(texts, np.ndarray) else tokenizer.encode_batch(list(texts))
    return retrieval.embed_in_batches(lambda b: encode_text(params, b), tokens, batch_size,
                                      sharding, "texts")

  return Encoders(image, text)


class Retrieval:
  """R@1/5/10 both ways on an ArrayRecord retrieval split (each image and
  its reference captions), loaded once."""

  def __init__(self, encoders: Encoders, data: retrieval.RetrievalSet, batch_size: int):
    self.encoders, self.data, self.batch_size = encoders, data, batch_size
    self.key, self.prefix = "retrieval", ""  # its metrics are the trainer's top-level ones

  @classmethod
  def from_split(cls, encoders, data_dir: str, split: str, tokenizer, image_size: int,
                 batch_size: int):
    data = retrieval.load_retrieval_set(records.split_files(data_dir, split).files, tokenizer,
                                        image_size)
    return cls(encoders, data, batch_size)

  def run(self, params) -> dict:
    image_emb = self.encoders.image(params, self.data.images, self.batch_size)
    text_emb = self.encoders.text(params, self.data.texts, self.batch_size)
    metrics = retrieval.retrieval_metrics(image_emb, text_emb, self.data.text_image,
                                          self.data.image_group)
    metrics.update(num_images=len(self.data.images), num_texts=len(self.data.texts))
    return metrics


class _TfdsTask:
  """A task on TFDS split(s) named by `spec`, with `config.eval`'s options."""
  kind = ""

  def __init__(self, encoders: Encoders, spec: str, eval_config, image_size: int):
    self.encoders, self.spec, self.image_size = encoders, spec, image_size
    self.eval_config = eval_config
    self.key, self.prefix = f"{self.kind}/{spec}", f"{self.kind}/{spec.split(':')[0]}/"


class ZeroShot(_TfdsTask):
  """Zero-shot top-1/top-5/mean per-class accuracy on a TFDS split
  (`spec` = NAME:SPLIT; prompts and class names as `tasks.run_zeroshot`)."""
  kind = "zeroshot"

  def run(self, params) -> dict:
    get = self.eval_config.get
    return tasks.run_zeroshot(
        lambda x, n: self.encoders.image(params, x, n),
        lambda t, n: self.encoders.text(params, t, n), self.spec, self.image_size,
        self.eval_config.batch_size, get("tfds_data_dir", ""), get("classnames", ""),
        get("templates", ""), get("max_items", 0))


class LinearProbe(_TfdsTask):
  """Logistic regression on frozen image features (`spec` =
  NAME:TRAIN_SPLIT:TEST_SPLIT, as `tasks.run_linear_probe`)."""
  kind = "linear_probe"

  def run(self, params) -> dict:
    get = self.eval_config.get
    return tasks.run_linear_probe(
        lambda x, n: self.encoders.image(params, x, n), self.spec, self.image_size,
        self.eval_config.batch_size, get("tfds_data_dir", ""), max_items=get("max_items", 0))


def tfds_evaluators(encoders: Encoders, eval_config, image_size: int,
                    which=("zeroshot", "linear_probe")) -> list:
  """A ZeroShot per spec of `eval_config.zeroshot`, then a LinearProbe per
  spec of `eval_config.linear_probe` (comma-separated), of the kinds in
  `which`."""
  specs = lambda kind: filter(None, eval_config.get(kind, "").split(",") if kind in which else [])
  return ([ZeroShot(encoders, s, eval_config, image_size) for s in specs("zeroshot")] +
          [LinearProbe(encoders, s, eval_config, image_size) for s in specs("linear_probe")])


def from_config(config, encoders: Encoders, data_dir: str, tokenizer) -> list:
  """The trainer's evaluators: retrieval on `config.data.eval_split`, then
  the TFDS tasks `config.eval` lists."""
  return [Retrieval.from_split(encoders, data_dir, config.data.eval_split, tokenizer,
                               config.data.image_size, config.eval.batch_size),
          *tfds_evaluators(encoders, config.eval, config.data.image_size)]


def run_all(evaluators, params) -> dict:
  """Every evaluator's metrics as one flat dict ('i2t_R@1',
  'zeroshot/<name>/top1', …: the trainer's eval.json and TensorBoard tags)."""
  return {ev.prefix + k: v for ev in evaluators for k, v in ev.run(params).items()}
