"""Pre-LayerNorm transformer encoder shared by the image and text towers.

Matches the CLIP/open_clip block (the official ALIP code uses GELU, not
QuickGELU; LayerNorm eps 1e-5) so public CLIP weights map onto it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

LN_EPS = 1e-5


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(width, dtype=self.dtype, name="proj")(x)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_1")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, name="attn")(y, y, mask=mask)
    x = x + y
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_2")(x)
    return x + MlpBlock(self.mlp_dim, self.dtype, name="mlp")(y)


class Encoder(nn.Module):
  """`depth` blocks; `remat` recomputes each block's activations in backward."""
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x, mask=None):
    block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    mlp_dim = int(x.shape[-1] * self.mlp_ratio)
    for i in range(self.depth):
      x = block(self.num_heads, mlp_dim, self.dtype, name=f"block{i:02d}")(x, mask)
    return x
