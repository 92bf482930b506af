"""The image tower: a CLIP-style Vision Transformer with class-token pooling."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from alip_jax.models.transformer import LN_EPS, Encoder, dense_init


class VisionTransformer(nn.Module):
  patch_size: int
  width: int
  depth: int
  num_heads: int
  embed_dim: int
  dtype: Any = jnp.float32
  remat: str = "none"
  scan: bool = False
  act: str = "gelu"
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, images, pooled_offset=None):
    """images: normalised float [B, H, W, 3] → unnormalised [B, embed_dim].
    `pooled_offset` [B, width] is added to the pooled feature before the
    projection (UniCLIP's augmentation-aware embedding)."""
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), use_bias=False, dtype=self.dtype,
                kernel_init=dense_init(("patch_h", "patch_w", "channels", "embed")),
                name="patch_embed")(images)
    batch, h, w, _ = x.shape
    x = x.reshape(batch, h * w, self.width)
    scale = self.width ** -0.5
    cls = self.param("cls_token", nn.with_logical_partitioning(
        nn.initializers.normal(scale), ("embed",)), (self.width,))
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(scale), ("length", "embed")), (h * w + 1, self.width))
    cls = jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, self.width))
    x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_pre")(x)
    x = Encoder(self.depth, self.num_heads, act=self.act, dtype=self.dtype, remat=self.remat,
                scan=self.scan, attention_impl=self.attention_impl, name="encoder")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_post")(x[:, 0])
    if pooled_offset is not None:
      x = x + pooled_offset.astype(x.dtype)
    return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                    kernel_init=dense_init(("embed", "joint")), name="proj")(x)
