"""CLIP: symmetric InfoNCE (Radford et al., 2021) on the texts `loss.path`
names ('raw', 'caption' or 'both', paths summed unweighted), the baseline
ALIP is compared against. `loss.chunked` computes it with the ring of
chunked.py (the same numbers); `loss.normalization` as ALIP's.
"""

from __future__ import annotations

from alip_jax.losses import chunked
from alip_jax.losses.contrastive import reduce_weighted
from alip_jax.losses.objective import PathObjective


def infonce_path(loss_cfg, image, text, logit_scale):
  """One path's InfoNCE over the global batch [N, D]."""
  per_sample = chunked.infonce_fn(loss_cfg, image.shape[0])
  return reduce_weighted(per_sample(image, text, logit_scale),
                         normalization=loss_cfg.normalization)


class CLIP(PathObjective):
  """`loss.name = 'clip'`."""

  def path_loss(self, image, text, logit_params):
    return infonce_path(self.cfg, image, text, logit_params["logit_scale"]), {}
