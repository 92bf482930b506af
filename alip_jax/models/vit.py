"""The image tower: a CLIP-style Vision Transformer with class-token pooling."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from alip_jax.models.transformer import LN_EPS, Tower, dense_init


class VisionTransformer(nn.Module):
  tower: Tower
  patch_size: int

  @nn.compact
  def __call__(self, images, pooled_offset=None):
    """images: normalised float [B, H, W, 3] → unnormalised [B, embed_dim].
    `pooled_offset` [B, width] is added to the pooled feature before the
    projection (an augmentation-aware embedding, UniCLIP's)."""
    p, width, dtype = self.patch_size, self.tower.width, self.tower.dtype
    x = nn.Conv(width, (p, p), strides=(p, p), use_bias=False, dtype=dtype,
                kernel_init=dense_init(("patch_h", "patch_w", "channels", "embed")),
                name="patch_embed")(images)
    batch, h, w, _ = x.shape
    x = x.reshape(batch, h * w, width)
    scale = width ** -0.5
    cls = self.param("cls_token", nn.with_logical_partitioning(
        nn.initializers.normal(scale), ("embed",)), (width,))
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(scale), ("length", "embed")), (h * w + 1, width))
    cls = jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, width))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name="ln_pre")(x)
    x = self.tower.encoder()(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name="ln_post")(x[:, 0])
    if pooled_offset is not None:
      x = x + pooled_offset.astype(x.dtype)
    return nn.Dense(self.tower.embed_dim, use_bias=False, dtype=dtype,
                    kernel_init=dense_init(("embed", "joint")), name="proj")(x)
