"""The text tower: a CLIP-style causal transformer pooled at the EOT token."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from alip_jax.models.transformer import LN_EPS, Tower, dense_init


class TextTransformer(nn.Module):
  tower: Tower
  vocab_size: int
  context_length: int
  eot_id: int  # the tokenizer's end token (3 for ours, 49407 for CLIP's BPE)

  @nn.compact
  def __call__(self, tokens):
    """tokens: int [B, L] as the tokenizer writes them → [B, embed_dim]."""
    if tokens.shape[-1] != self.context_length:
      raise ValueError(f"tokens have length {tokens.shape[-1]}, the text tower "
                       f"was built for context_length={self.context_length}")
    width, dtype = self.tower.width, self.tower.dtype
    x = nn.Embed(self.vocab_size, width, dtype=dtype, name="token_embedding",
                 embedding_init=nn.with_logical_partitioning(
                     nn.initializers.normal(0.02), ("vocab", "embed")))(tokens)
    pos = self.param("pos_embedding", nn.with_logical_partitioning(
        nn.initializers.normal(0.01), ("length", "embed")), (self.context_length, width))
    x = x + pos.astype(x.dtype)
    x = self.tower.encoder(causal=True)(x)
    x = nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name="ln_final")(x)
    # Pool at the first EOT (as HF CLIP does): the tokenizer always writes
    # one, also when it truncates; padding may follow it.
    eot = jnp.argmax(tokens == self.eot_id, axis=-1)
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return nn.Dense(self.tower.embed_dim, use_bias=False, dtype=dtype,
                    kernel_init=dense_init(("embed", "joint")), name="proj")(x)
