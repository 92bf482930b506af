"""The text tower: a CLIP-style causal transformer pooled at the EOT token."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from alip_jax.data.tokenizer import PAD_ID
from alip_jax.models.transformer import LN_EPS, Encoder


class TextTransformer(nn.Module):
  vocab_size: int
  context_length: int
  width: int
  depth: int
  num_heads: int
  embed_dim: int
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, tokens):
    """tokens: int [B, L] as the tokenizer writes them → [B, embed_dim]."""
    if tokens.shape[-1] != self.context_length:
      raise ValueError(f"tokens have length {tokens.shape[-1]}, the text tower "
                       f"was built for context_length={self.context_length}")
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 dtype=self.dtype, name="token_embedding")(tokens)
    pos = self.param("pos_embedding", nn.initializers.normal(0.01),
                     (self.context_length, self.width))
    x = x + pos.astype(x.dtype)
    x = Encoder(self.depth, self.num_heads, dtype=self.dtype, remat=self.remat,
                name="encoder")(x, nn.make_causal_mask(tokens))
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_final")(x)
    # EOT sits right after the last real token; PAD (0) only follows it.
    eot = jnp.sum(tokens != PAD_ID, axis=-1) - 1
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype, name="proj")(x)
