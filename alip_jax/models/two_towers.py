"""The CLIP dual encoder used by ALIP: one image tower, one shared text tower.

Raw text and caption go through the *same* text tower (in one call, stacked
along the batch). Embeddings are returned L2-normalised in float32 whatever
the compute dtype, because the losses and gates need fp32 cosines. The heads
beside the towers (logit scale, bias, augmentation MLP, domain scales) are
what the objective declares (`losses.get(config.loss).model_heads`); the
model knows no objective by name.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from alip_jax.models import transformer, zoo
from alip_jax.models.text import TextTransformer
from alip_jax.models.vit import VisionTransformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE_MAX = math.log(100.0)
# The parameters the losses read directly (returned as `logit_params`).
LOGIT_PARAMS = ("logit_scale", "logit_bias", "domain_log_scale", "domain_offset")


def normalize_images(images):
  """uint8 [.., H, W, 3] → CLIP-normalised float32 (done on device)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def l2_normalize(x, eps=1e-8):
  x = x.astype(jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


class TwoTowers(nn.Module):
  """The heads, as the objective declares them: `logit_scale_init` is the
  log of the initial scale (CLIP: ln 1/0.07; SigLIP: ln 10);
  `logit_bias_init` adds a learnable bias (SigLIP: −10); `aug_identity`
  adds an augmentation-aware image embedding (UniCLIP): an MLP of each
  view's augmentation vector, of that length, added to the pooled feature —
  `aug_identity` itself is the vector of an un-augmented image;
  `domain_log_scale_init` adds a learnable log scale (these initial values)
  and offset (0) per domain pair (UniCLIP: ii, it, tt)."""
  image: VisionTransformer
  text: TextTransformer
  logit_scale_init: float
  logit_bias_init: float | None = None
  aug_identity: tuple[float, ...] | None = None
  domain_log_scale_init: tuple[float, ...] = ()

  def setup(self):
    self.image_tower = self.image
    self.text_tower = self.text
    # Declared in this order: it is the parameters' init order.
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(self.logit_scale_init), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param(
          "logit_bias", nn.initializers.constant(self.logit_bias_init), ())
    if self.domain_log_scale_init:
      # z = exp(domain_log_scale[d])·(cos − domain_offset[d]).
      pairs = len(self.domain_log_scale_init)
      self.domain_log_scale = self.param(
          "domain_log_scale",
          lambda _, shape: jnp.asarray(self.domain_log_scale_init, jnp.float32), (pairs,))
      self.domain_offset = self.param("domain_offset", nn.initializers.zeros, (pairs,))
    if self.aug_identity is not None:
      self.aug_hidden = nn.Dense(self.image.tower.embed_dim, dtype=self.image.tower.dtype)
      self.aug_out = nn.Dense(self.image.tower.width, dtype=self.image.tower.dtype,
                              kernel_init=nn.initializers.zeros)

  def encode_image(self, images, aug=None):
    """aug [B, len(aug_identity)]: the views' augmentation vectors (with
    an augmentation head only); None means un-augmented (evaluation)."""
    if images.dtype == jnp.uint8:
      images = normalize_images(images)
    offset = None
    if self.aug_identity is not None:
      if aug is None:
        aug = jnp.broadcast_to(jnp.asarray(self.aug_identity, jnp.float32),
                               (images.shape[0], len(self.aug_identity)))
      offset = self.aug_out(nn.gelu(self.aug_hidden(aug), approximate=False))
    return l2_normalize(self.image_tower(images.astype(self.image.tower.dtype), offset))

  def encode_text(self, tokens):
    return l2_normalize(self.text_tower(tokens))

  def __call__(self, images, texts: dict, aug=None):
    """Embeds images and each entry of `texts` (name → tokens [B, L]).

    Returns ({"image": x, name: t, ...}, logit_params) where logit_params
    holds "logit_scale" (and "logit_bias" when the model has one); the text
    entries are embedded in one text-tower call.
    """
    embeddings = {"image": self.encode_image(images, aug)}
    if texts:
      names = sorted(texts)
      stacked = self.encode_text(jnp.concatenate([texts[n] for n in names]))
      for name, part in zip(names, jnp.split(stacked, len(names))):
        embeddings[name] = part
    logit_params = {"logit_scale": self.logit_scale}
    if self.logit_bias_init is not None:
      logit_params["logit_bias"] = self.logit_bias
    if self.domain_log_scale_init:
      logit_params["domain_log_scale"] = self.domain_log_scale
      logit_params["domain_offset"] = self.domain_offset
    return embeddings, logit_params


def from_config(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                context_length: int, eot_id: int, **heads) -> TwoTowers:
  """Towers by name or dict (`models.zoo`); `model.dtype` is the compute
  dtype (parameters stay float32); `model.remat`, `model.scan`, `model.act`
  and `model.attention` are optional. `eot_id` is the tokenizer's end token,
  where the text tower pools; `heads` are `TwoTowers`' head fields (the
  objective's `model_heads`; `logit_scale_init` at least)."""
  common = dict(embed_dim=model_cfg.embed_dim, dtype=jnp.dtype(model_cfg.dtype),
                remat=transformer.remat_name(model_cfg.get("remat", "none")),
                scan=bool(model_cfg.get("scan", False)), act=model_cfg.get("act", "gelu"),
                attention=model_cfg.get("attention", None) or None)
  image = zoo.image_tower(model_cfg.image)
  patch_size = image.pop("patch_size")
  return TwoTowers(
      image=VisionTransformer(transformer.Tower(**image, **common), patch_size),
      text=TextTransformer(transformer.Tower(**zoo.text_tower(model_cfg.text), **common),
                           vocab_size, context_length, eot_id),
      **heads)
