"""SigLIP: the pairwise sigmoid loss (Zhai et al., 2023), over the global batch.

  logits = t·a bᵀ + b_bias,  labels = +1 on the diagonal, −1 elsewhere
  L = −mean_i Σ_j log σ(label_ij · logits_ij)      (summed over the row)

t = exp(t') with t' learnable (init t = 10) and a learnable bias (init −10),
as in the SigLIP paper and big_vision. `loss.chunked` computes the row sums
with the ring of chunked.py (the same numbers).
"""

from __future__ import annotations

import jax.numpy as jnp

from alip_jax.losses import chunked
from alip_jax.losses.contrastive import siglip_row_sums
from alip_jax.losses.objective import PathObjective

SIGLIP_SCALE_INIT = 2.302585092994046  # ln 10
SIGLIP_BIAS_INIT = -10.0


def siglip_loss(a, b, logit_scale, logit_bias):
  return jnp.mean(siglip_row_sums(a, b, logit_scale, logit_bias))


class SigLIP(PathObjective):
  """`loss.name = 'siglip'`: a learnable bias beside the scale."""

  @property
  def model_heads(self):
    return {"logit_scale_init": SIGLIP_SCALE_INIT, "logit_bias_init": SIGLIP_BIAS_INIT}

  def path_loss(self, image, text, logit_params):
    scale, bias = logit_params["logit_scale"], logit_params["logit_bias"]
    if chunked.use_chunked(self.cfg, image.shape[0]):
      return jnp.mean(chunked.ring_siglip_row_sums(image, text, scale, bias)), {}
    return siglip_loss(image, text, scale, bias), {}
