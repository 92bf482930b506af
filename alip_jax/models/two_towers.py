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
  image: VisionTransformer
  text: TextTransformer

  def setup(self):
    self.image_tower = self.image
    self.text_tower = self.text
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(LOGIT_SCALE_INIT), ())

  def encode_image(self, images):
    if images.dtype == jnp.uint8:
      images = normalize_images(images)
    return l2_normalize(self.image_tower(images.astype(self.image.dtype)))

  def encode_text(self, tokens):
    return l2_normalize(self.text_tower(tokens))

  def __call__(self, images, texts: dict):
    """Embeds images and each entry of `texts` (name → tokens [B, L]).

    Returns ({"image": x, name: t, ...}, logit_scale); the text entries are
    embedded in one text-tower call.
    """
    embeddings = {"image": self.encode_image(images)}
    if texts:
      names = sorted(texts)
      stacked = self.encode_text(jnp.concatenate([texts[n] for n in names]))
      for name, part in zip(names, jnp.split(stacked, len(names))):
        embeddings[name] = part
    return embeddings, self.logit_scale


def from_config(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                context_length: int) -> TwoTowers:
  dtype = jnp.dtype(model_cfg.dtype)
  image = model_cfg.image
  text = model_cfg.text
  return TwoTowers(
      image=VisionTransformer(image.patch_size, image.width, image.depth,
                              image.heads, model_cfg.embed_dim, dtype, model_cfg.remat),
      text=TextTransformer(vocab_size, context_length, text.width, text.depth,
                           text.heads, model_cfg.embed_dim, dtype, model_cfg.remat))
