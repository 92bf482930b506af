"""The text tower: a CLIP-style causal transformer pooled at the EOT token."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from alip_jax.models.transformer import LN_EPS, Encoder, dense_init


class TextTransformer(nn.Module):
  vocab_size: int
  context_length: int
  width: int
  depth: int
  num_heads: int
  embed_dim: int
  eot_id: int  # the tokenizer's end token (3 for ours, 49407 for CLIP's BPE)
  dtype: Any = jnp.float32
  remat: str = "none"
  scan: bool = False
  act: str = "gelu"
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, tokens):
    """tokens: int [B, L] as the tokenizer writes them → [B, embed_dim]."""
    if tokens.shape[-1] != self.context_length:
      raise ValueError(f"tokens have length {tokens.shape[-1]}, the text tower "
                       f"was built for context_length={self.context_length}")
    x = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, name="token_embedding",
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(0.02), ("vocab", "embed")))(tokens)
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.01), ("length", "embed")), (self.context_length, self.width))
    x = x + pos.astype(x.dtype)
    x = Encoder(self.depth, self.num_heads, causal=True, act=self.act, dtype=self.dtype,
                remat=self.remat, scan=self.scan, attention_impl=self.attention_impl,
                name="encoder")(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_final")(x)
    # Pool at the first EOT (as HF CLIP does): the tokenizer always writes
    # one, also when it truncates; padding may follow it.
    eot = jnp.argmax(tokens == self.eot_id, axis=-1)
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                    kernel_init=dense_init(("embed", "joint")), name="proj")(x)
