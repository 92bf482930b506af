"""Zero-shot image↔text retrieval: R@1/5/10 in both directions.

Protocol (Flickr30k/COCO style, generalised): every image has one or more
reference captions; an image→text query is a hit at K if *any* positive
caption is among the top K, and a text→image query if its image is. Items
may carry a group id (the embedded corpus writes `meta.scene`): captions of
images in the same group are interchangeable, so they count as positives too.
Without groups each caption is positive only for its own image.

Embeddings are computed in fixed-size batches on the mesh (`embed_in_batches`);
the last batch is padded and the padding dropped, so every item is evaluated
exactly once.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

from alip_jax import mesh as mesh_lib, progress
from alip_jax.data import pipeline, records, web
from alip_jax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RetrievalSet:
  images: np.ndarray         # uint8 [N, H, W, 3]
  texts: np.ndarray          # int32 [M, L]
  text_image: np.ndarray     # int [M]: index of the image each text describes
  image_group: np.ndarray    # [N] group ids (equal id ⇒ interchangeable captions)
  keys: list[str]
  skipped: int = 0


def load_retrieval_set(files: list[str], tokenizer: Tokenizer, image_size: int,
                       max_items: int | None = None) -> RetrievalSet:
  source = records.ShardedSource(files)
  counter = pipeline.BadRecordCounter()
  images, texts, text_image, groups, keys = [], [], [], [], []
  count = len(source) if max_items is None else min(max_items, len(source))
  for index in progress.bar(range(count), desc="retrieval set", unit="rec"):
    rec = pipeline.decode_record(source[index], min_side=image_size)
    if not counter(rec):
      continue
    refs = [web.clean_text(c.decode("utf-8", errors="replace") if isinstance(c, bytes)
                                else c) for c in rec["captions"] or [rec["caption"]]]
    refs = [c for c in refs if c]
    if not refs:
      counter({"key": rec["key"], "error": "no_reference_caption"})
      continue
    for ref in refs:
      texts.append(tokenizer.encode(ref))
      text_image.append(len(images))
    images.append(pipeline.eval_image(rec["image"], image_size))
    groups.append(rec["meta"].get("scene", rec["key"]))
    keys.append(rec["key"])
  if not images:
    raise ValueError(f"no usable retrieval records in {files}")
  if counter.total:
    log.warning("retrieval set: skipped %d records %s", counter.total, dict(counter.counts))
  _, group_ids = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
  return RetrievalSet(np.stack(images), np.stack(texts), np.asarray(text_image),
                      group_ids, keys, counter.total)


def embed_in_batches(embed_fn, inputs: np.ndarray, batch_size: int, sharding=None,
                     desc: str = "embedding", *, pad_to=None) -> np.ndarray:
  """`embed_fn` over `inputs` in chunks of `batch_size` rows → its outputs
  for every row, in order: the one pad-and-embed loop of evaluation and
  inference.

  Padding rule: a chunk of n rows is filled up to `pad_to(n)` rows (default:
  always `batch_size`, so every call has one shape and `embed_fn` compiles
  once) with copies of its last row, a valid input for any encoder; the
  padding's outputs are dropped, so each row is embedded exactly once. Rows
  must be independent (an encoder's forward pass), so padding never changes
  a real row's output. `sharding`: where each padded chunk is put (None: as
  `embed_fn` takes numpy, e.g. a jit with in_shardings). Empty `inputs` give
  an empty array shaped like `embed_fn`'s output.
  """
  pad_to = pad_to or (lambda n: batch_size)
  outputs = []
  for start in progress.bar(range(0, len(inputs), batch_size), desc=desc, unit="batch"):
    chunk = inputs[start : start + batch_size]
    valid = len(chunk)
    if pad_to(valid) > valid:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad_to(valid) - valid, axis=0)])
    out = embed_fn(chunk if sharding is None else jax.device_put(chunk, sharding))
    outputs.append(mesh_lib.to_host(out)[:valid])
  if not outputs:
    shape = jax.eval_shape(embed_fn, np.zeros((pad_to(1),) + inputs.shape[1:], inputs.dtype))
    return np.zeros((0,) + shape.shape[1:], shape.dtype)
  return np.concatenate(outputs)


def ranks(similarity: np.ndarray, positive: np.ndarray) -> np.ndarray:
  """similarity, positive: [queries, candidates] → each query's rank: the
  number of candidates scoring strictly above its best positive."""
  best_positive = np.where(positive, similarity, -np.inf).max(axis=1)
  return (similarity > best_positive[:, None]).sum(axis=1)


def recall_at_k(similarity: np.ndarray, positive: np.ndarray, ks=(1, 5, 10)) -> dict:
  """Hit at K iff a query's rank (`ranks`) < K."""
  rank = ranks(similarity, positive)
  return {k: float(np.mean(rank < k)) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, text_image: np.ndarray,
                      image_group: np.ndarray | None = None, ks=(1, 5, 10)) -> dict:
  similarity = image_emb @ text_emb.T
  if image_group is None:
    positive = np.arange(len(image_emb))[:, None] == text_image[None, :]
  else:
    positive = image_group[:, None] == image_group[text_image][None, :]
  metrics = {}
  for k, v in recall_at_k(similarity, positive, ks).items():
    metrics[f"i2t_R@{k}"] = v
  for k, v in recall_at_k(similarity.T, positive.T, ks).items():
    metrics[f"t2i_R@{k}"] = v
  return metrics
