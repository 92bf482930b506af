"""Does the Language Consistency Gate find noisy raw texts?

Scores training samples with a trained model's sample weight W^s (the LCG
weight at the run's final running mean H_tc) and measures, with the corpus's
ground-truth noise kinds (kept in `meta.noise_kind`, never trained on), how
well the weight ranks matched raw texts above mismatched ones (ROC AUC).
"""

from __future__ import annotations

import numpy as np

from alip_jax.data import pipeline, records
from alip_jax.evaluation.retrieval import embed_in_batches


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """P(score of a random positive > score of a random negative), ties ½
  (the Mann–Whitney U statistic with average ranks)."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  n_pos, n_neg = positive.sum(), (~positive).sum()
  if n_pos == 0 or n_neg == 0:
    raise ValueError("roc_auc needs both positives and negatives")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts - 1) / 2.0 + 1
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def lcg_weights(encode_text, files, tokenizer, h_tc: float, gamma_sample: float,
                batch_size: int, sharding, max_items: int = 4000):
  """W^s = min(1, exp(γ_s·(t·c − H_tc))) per record, with its noise kind."""
  source = records.ShardedSource(files)
  raw, caption, kinds = [], [], []
  for index in range(min(max_items, len(source))):
    rec = pipeline.decode_record(source[index])
    if "error" in rec:
      continue
    raw.append(tokenizer.encode(rec["raw_text"]))
    caption.append(tokenizer.encode(rec["caption"]))
    kinds.append(rec["meta"].get("noise_kind"))
  t = embed_in_batches(encode_text, np.stack(raw), batch_size, sharding)
  c = embed_in_batches(encode_text, np.stack(caption), batch_size, sharding)
  s_tc = np.sum(t * c, axis=-1)
  weights = np.minimum(1.0, np.exp(gamma_sample * (s_tc - h_tc)))
  return weights, s_tc, np.asarray(kinds)


def lcg_auc(weights: np.ndarray, kinds: np.ndarray, noisy_kind: str = "mismatched") -> float:
  """AUC of the weight for telling `matched` (positive) from `noisy_kind`."""
  keep = (kinds == "matched") | (kinds == noisy_kind)
  return roc_auc(weights[keep], kinds[keep] == "matched")
