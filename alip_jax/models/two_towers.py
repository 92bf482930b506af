"""The CLIP dual encoder used by ALIP: one image tower, one shared text tower.

Raw text and caption go through the *same* text tower (in one call, stacked
along the batch). Embeddings are returned L2-normalised in float32 whatever
the compute dtype, because the losses and gates need fp32 cosines.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from alip_jax.models.text import TextTransformer
from alip_jax.models.vit import VisionTransformer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


def normalize_images(images):
  """uint8 [.., H, W, 3] → CLIP-normalised float32 (done on device)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def l2_normalize(x, eps=1e-8):
  x = x.astype(jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


class TwoTowers(nn.Module):
  """`logit_scale_init` is the log of the initial scale (CLIP: ln 1/0.07;
  SigLIP: ln 10). `logit_bias_init` adds a learnable bias (SigLIP: −10)."""
  image: VisionTransformer
  text: TextTransformer
  logit_scale_init: float = LOGIT_SCALE_INIT
  logit_bias_init: float | None = None

  def setup(self):
    self.image_tower = self.image
    self.text_tower = self.text
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(self.logit_scale_init), ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param(
          "logit_bias", nn.initializers.constant(self.logit_bias_init), ())

  def encode_image(self, images):
    if images.dtype == jnp.uint8:
      images = normalize_images(images)
    return l2_normalize(self.image_tower(images.astype(self.image.dtype)))

  def encode_text(self, tokens):
    return l2_normalize(self.text_tower(tokens))

  def __call__(self, images, texts: dict):
    """Embeds images and each entry of `texts` (name → tokens [B, L]).

    Returns ({"image": x, name: t, ...}, logit_params) where logit_params
    holds "logit_scale" (and "logit_bias" when the model has one); the text
    entries are embedded in one text-tower call.
    """
    embeddings = {"image": self.encode_image(images)}
    if texts:
      names = sorted(texts)
      stacked = self.encode_text(jnp.concatenate([texts[n] for n in names]))
      for name, part in zip(names, jnp.split(stacked, len(names))):
        embeddings[name] = part
    logit_params = {"logit_scale": self.logit_scale}
    if self.logit_bias_init is not None:
      logit_params["logit_bias"] = self.logit_bias
    return embeddings, logit_params


def from_config(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                context_length: int, logit_scale_init: float = LOGIT_SCALE_INIT,
                logit_bias_init: float | None = None) -> TwoTowers:
  dtype = jnp.dtype(model_cfg.dtype)
  image = model_cfg.image
  text = model_cfg.text
  return TwoTowers(
      image=VisionTransformer(image.patch_size, image.width, image.depth,
                              image.heads, model_cfg.embed_dim, dtype, model_cfg.remat),
      text=TextTransformer(vocab_size, context_length, text.width, text.depth,
                           text.heads, model_cfg.embed_dim, dtype, model_cfg.remat),
      logit_scale_init=logit_scale_init, logit_bias_init=logit_bias_init)
