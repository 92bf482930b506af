"""VeCLIP-style caption mixing: per sample the synthetic caption with
probability `loss.mix.caption_prob`, else the raw web text, then CLIP's
InfoNCE on that one text.

The choice is made before embedding, so only one text per sample goes
through the text tower; it is drawn from the step's key (the seed with the
step folded in), so it does not depend on the mesh and repeats exactly after
a resume.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alip_jax.losses.clip import infonce_path
from alip_jax.losses.objective import Objective


class Mix(Objective):
  """`loss.name = 'mix'`."""
  text_names = ("mixed",)

  def inputs(self, batch, rng):
    raw, caption = batch["raw_tokens"], batch["caption_tokens"]
    use_caption = jax.random.bernoulli(rng, self.cfg.mix.caption_prob, (raw.shape[0],))
    return batch["image"], None, {"mixed": jnp.where(use_caption[:, None], caption, raw)}

  def path_loss(self, image, text, logit_params):
    return infonce_path(self.cfg, image, text, logit_params["logit_scale"]), {}
