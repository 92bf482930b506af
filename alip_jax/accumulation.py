"""Contrastive-correct gradient accumulation (GradCache, Gao et al. 2021).

A contrastive loss cannot be split into micro-batches: every sample's
negatives are the whole global batch. GradCache splits the *towers* instead:

1. embed every micro-batch with no activations kept (`lax.map`, no grad);
2. compute the loss (with ALIP's gates) on all embeddings at once, and its
   gradient w.r.t. the embeddings and the loss's own parameters (scales);
3. for each micro-batch, re-run the towers under `jax.vjp` and pull that
   micro-batch's embedding gradient back into the parameters (`lax.scan`,
   so only one micro-batch's activations are alive at a time).

The result equals `jax.value_and_grad` of the whole-batch loss up to float
summation order (tested). Micro-batch i takes rows i, i+k, i+2k, … so that
every micro-batch stays spread over all devices of a batch-sharded mesh.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _split(x, k):
  """[B, …] → [k, B/k, …] with micro-batch i = rows i, i+k, …"""
  if x.shape[0] % k:
    raise ValueError(f"a batch of {x.shape[0]} does not split into {k} micro-batches; "
                     f"make train.batch_size a multiple of train.accum_steps × the batch axes")
  return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def _merge(x):
  """The inverse of `_split`: [k, B/k, …] → [B, …] in the original order."""
  return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def value_and_grad(embed_fn, loss_fn, params, inputs, num_micro: int):
  """Like `jax.value_and_grad(lambda p: loss_fn(embed_fn(p, inputs), p),
  has_aux=True)(params)`, with the towers run `num_micro` samples-slices at a
  time.

  embed_fn(params, inputs) → pytree of per-sample arrays (the embeddings);
  loss_fn(embeddings, params) → (loss, aux); it may read params directly
  (logit scale, bias), which get their gradient from step 2.
  """
  micro = jax.tree.map(lambda x: _split(x, num_micro), inputs)
  frozen = jax.lax.stop_gradient(params)
  embeddings = jax.tree.map(_merge, jax.lax.map(lambda mb: embed_fn(frozen, mb), micro))
  (loss, aux), (embedding_grads, direct_grads) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True)(embeddings, params)
  micro_grads = jax.tree.map(lambda g: _split(g, num_micro), embedding_grads)

  def backward(grads, xs):
    mb, cotangent = xs
    _, pullback = jax.vjp(lambda p: embed_fn(p, mb), params)
    return jax.tree.map(jnp.add, grads, pullback(cotangent)[0]), None

  grads, _ = jax.lax.scan(backward, direct_grads, (micro, micro_grads))
  return (loss, aux), grads
