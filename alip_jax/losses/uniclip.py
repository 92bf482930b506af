"""UniCLIP (Lee et al., NeurIPS 2022) — *reconstructed*, not checked against
the paper (no full text or code was available; docs/METHOD.md, "UniCLIP
(reconstructed)", lists every choice).

One universal space holds every view and text of the global batch: two
augmented image views and the text(s) of each sample ([I1 | I2 | T…], 3N
embeddings with one text path). Then:

* **domain-dependent similarity**: z_ab = (cos(e_a, e_b) − b_d) / τ_d for the
  unordered domain pair d ∈ {image–image, image–text, text–text}, learnable,
  init τ_d = 0.07, b_d = 0 (parametrised as exp(log_scale_d)·(cos − b_d));
* **MP-NCE**: every embedding with the same sample index is a positive of the
  anchor, every embedding with another index (any domain) a negative; each
  positive competes only against the anchor's negatives:
      L = mean over (anchor a, positive p) of softplus(LSE_{n∈𝒩(a)} z_an − z_ap);
* the augmentation-aware embedding is a model head this objective asks for
  (`model_heads`; models/two_towers.py builds it): an MLP of each view's
  augmentation vector added to the pooled image feature before the
  projection; texts get none. The pipeline emits the two views as `image`,
  `image_view2` and their vectors as `aug` [N, 2, AUG_DIM].

With `loss.path = 'both'` the raw text and the caption are two texts of the
sample (two more positives per anchor).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alip_jax.losses.contrastive import LOGIT_SCALE_INIT
from alip_jax.losses.objective import PathObjective

IMAGE, TEXT = 0, 1
DOMAIN_PAIRS = ("ii", "it", "tt")  # image–image, image–text, text–text
# The augmentation vector (data/pipeline.py's `train_image`): crop box (x, y,
# w, h as fractions of the source image), flip bit, brightness/contrast/
# saturation factors (1 = none); the identity is an un-augmented image.
IDENTITY_AUG = (0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0)
AUG_DIM = len(IDENTITY_AUG)


def universal_layout(num_samples: int, num_views: int, num_texts: int):
  """(sample index, domain) of each row of [views… | texts…]."""
  ids = jnp.tile(jnp.arange(num_samples), num_views + num_texts)
  domains = jnp.repeat(jnp.array([IMAGE] * num_views + [TEXT] * num_texts), num_samples)
  return ids, domains


def mpnce_loss(image_views: list, texts: list, domain_log_scale, domain_offset):
  """image_views, texts: lists of [N, D] normalised embeddings."""
  emb = jnp.concatenate([e.astype(jnp.float32) for e in image_views + texts])
  ids, domains = universal_layout(image_views[0].shape[0], len(image_views), len(texts))
  pair = domains[:, None] + domains[None, :]  # II = 0, IT = 1, TT = 2
  scale = jnp.exp(domain_log_scale.astype(jnp.float32))[pair]
  logits = scale * (emb @ emb.T - domain_offset.astype(jnp.float32)[pair])
  same = ids[:, None] == ids[None, :]
  positive = same & ~jnp.eye(len(ids), dtype=bool)
  neg_lse = jax.nn.logsumexp(jnp.where(same, -jnp.inf, logits), axis=1)
  per_pair = jax.nn.softplus(neg_lse[:, None] - logits)
  loss = jnp.sum(jnp.where(positive, per_pair, 0.0)) / jnp.sum(positive)
  metrics = {f"uniclip_scale_{name}": jnp.exp(domain_log_scale[i])
             for i, name in enumerate(DOMAIN_PAIRS)}
  return loss, metrics


class UniCLIP(PathObjective):
  """`loss.name = 'uniclip'`: two views, the augmentation MLP and the
  domain scales (τ_d = 0.07, b_d = 0 at init); never the ring."""
  num_views = 2

  @property
  def model_heads(self):
    return {"logit_scale_init": LOGIT_SCALE_INIT, "aug_identity": IDENTITY_AUG,
            "domain_log_scale_init": (LOGIT_SCALE_INIT,) * len(DOMAIN_PAIRS)}

  def inputs(self, batch, rng):
    """The two views stacked along the batch ([view 1 | view 2])."""
    images = jnp.concatenate([batch["image"], batch["image_view2"]])
    aug = jnp.concatenate([batch["aug"][:, 0], batch["aug"][:, 1]])
    return images, aug, super().inputs(batch, rng)[2]

  def loss(self, embeddings, logit_params, gate_state):
    views = jnp.split(embeddings["image"], self.num_views)
    loss, metrics = mpnce_loss(views, [embeddings[n] for n in self.text_names],
                               logit_params["domain_log_scale"], logit_params["domain_offset"])
    return loss, gate_state, {"loss_mpnce": loss, **metrics}
