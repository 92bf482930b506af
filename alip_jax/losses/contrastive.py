"""The pairwise terms over the global batch: symmetric InfoNCE as open_clip
and ALIP compute it, and SigLIP's sigmoid row sums (siglip.py says why).

Written as if the whole batch were on one device: under `jax.jit` with the
batch sharded over the mesh, XLA inserts the collectives, so the numbers do
not depend on the mesh. Everything here runs in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's initial scale, as its log


def infonce_per_sample(a, b, logit_scale):
  """Per-sample (CE_a→b[i] + CE_b→a[i]) / 2 for positives on the diagonal.

  a, b: [N, D] L2-normalised; logit_scale: the *log* of the scale s.
  CE_a→b[i] = LSE_j s·a_i·b_j − s·a_i·b_i, and CE_b→a[i] likewise over column i.
  """
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * a @ b.T
  positives = jnp.diagonal(logits)
  ce_a2b = jax.nn.logsumexp(logits, axis=1) - positives
  ce_b2a = jax.nn.logsumexp(logits, axis=0) - positives
  return (ce_a2b + ce_b2a) / 2


def reduce_weighted(per_sample, weights=None, normalization="mean_half"):
  """Sums a path's per-sample losses into one number.

  'mean_half' (official ALIP / open_clip code): mean_i w_i·(CE_i2t + CE_t2i)/2.
  'sum' (ALIP paper, Eqs. 5–6 as written): Σ_i w_i·(CE_i2t + CE_t2i), i.e. 2N×.
  """
  if weights is not None:
    per_sample = weights * per_sample
  if normalization == "mean_half":
    return jnp.mean(per_sample)
  if normalization == "sum":
    return 2.0 * jnp.sum(per_sample)
  raise ValueError(f"loss normalization must be 'mean_half' or 'sum', got {normalization!r}")


def siglip_row_sums(a, b, logit_scale, logit_bias):
  """Per row i: −Σ_j log σ(label_ij · logit_ij), labels +1 on the diagonal."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * a @ b.T + logit_bias
  labels = 2.0 * jnp.eye(a.shape[0], dtype=jnp.float32) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1)
