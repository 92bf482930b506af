"""SigLIP: the pairwise sigmoid loss (Zhai et al., 2023), over the global batch.

  logits = t·a bᵀ + b_bias,  labels = +1 on the diagonal, −1 elsewhere
  L = −mean_i Σ_j log σ(label_ij · logits_ij)      (summed over the row)

t = exp(t') with t' learnable (init t = 10) and a learnable bias (init −10),
as in the SigLIP paper and big_vision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SIGLIP_SCALE_INIT = 2.302585092994046  # ln 10
SIGLIP_BIAS_INIT = -10.0


def siglip_row_sums(a, b, logit_scale, logit_bias):
  """Per row i: −Σ_j log σ(label_ij · logit_ij)."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * a @ b.T + logit_bias
  labels = 2.0 * jnp.eye(a.shape[0], dtype=jnp.float32) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1)


def siglip_loss(a, b, logit_scale, logit_bias):
  return jnp.mean(siglip_row_sums(a, b, logit_scale, logit_bias))
