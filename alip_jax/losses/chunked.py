"""Memory-bounded contrastive losses: a ring over the mesh's batch axes
(data × fsdp, in that order: the batch's own sharding).

The full losses materialise N×N logits (per device an n×N row block under
GSPMD): at N = 32k that is 512 MiB per block in fp32, plus softmax and
gradient temporaries. Here each device keeps its n local rows and the text
blocks travel round the ring with `ppermute`; every hop computes one n×n
block and folds it into online log-sum-exp accumulators:

* row LSE (image i against every text) accumulates on the device of row i;
* column LSE (text j against every image) travels *with* text block j and
  is back on its owner after W hops.

The result is the same per-sample terms as `infonce_per_sample` (and the same
per-row sums as SigLIP), so ALIP's gates, CLIP and mixing use it unchanged.
The scan body is rematerialised (`jax.checkpoint`), so the backward pass
keeps O(n·D) per hop instead of the n×n blocks; autodiff turns each
`ppermute` into the reverse permutation.

Needs a mesh in context (`jax.set_mesh`, as the trainer does); with none,
or a data axis of size 1, the full versions run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from alip_jax.losses.contrastive import infonce_per_sample, siglip_row_sums
from alip_jax.mesh import BATCH_AXES

AXIS = BATCH_AXES  # ppermute/pcast over several axes use their flattened index


def use_chunked(loss_cfg, global_batch: int) -> bool:
  """`loss.chunked`: 'on', 'off', or 'auto' = on from a global batch of
  `loss.chunk_above` (True/False work too)."""
  mode = loss_cfg.get("chunked", "off")
  if mode == "auto":
    return global_batch >= loss_cfg.get("chunk_above", 8192)
  if mode in ("on", True):
    return True
  if mode in ("off", False):
    return False
  raise ValueError(f"config.loss.chunked must be 'auto', 'on' or 'off', got {mode!r}")


def infonce_fn(loss_cfg, global_batch: int):
  """The per-sample InfoNCE to use: the ring form when `use_chunked`."""
  return ring_infonce_per_sample if use_chunked(loss_cfg, global_batch) else infonce_per_sample


def _ring_size():
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  return math.prod(mesh.shape[a] for a in AXIS if a in mesh.axis_names)


def _ring(block_fn, carry_init, x, y, size):
  """Runs `size` hops; block_fn(x, y_block, is_own, acc, travelling) → (acc, travelling)."""
  perm = [(j, (j - 1) % size) for j in range(size)]  # device j gets block from j + 1

  @jax.checkpoint
  def hop(carry, k):
    acc, y_block, travelling = carry
    acc, travelling = block_fn(x, y_block, k == 0, acc, travelling)
    y_block, travelling = jax.lax.ppermute((y_block, travelling), AXIS, perm)
    return (acc, y_block, travelling), None

  # The accumulators differ per device: mark them varying over the axis.
  acc, travelling = jax.tree.map(lambda v: jax.lax.pcast(v, AXIS, to="varying"), carry_init)
  (acc, _, travelling), _ = jax.lax.scan(hop, (acc, y, travelling), jnp.arange(size))
  return acc, travelling


def ring_infonce_per_sample(a, b, logit_scale):
  """Same numbers as `infonce_per_sample(a, b, logit_scale)` for a, b [N, D]
  sharded over the batch axes; memory O(n·n) per device instead of O(n·N)."""
  size = _ring_size()
  if size == 1:
    return infonce_per_sample(a, b, logit_scale)

  def local(a, b, log_scale):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    scale = jnp.exp(log_scale.astype(jnp.float32))
    n = a.shape[0]

    def block(a, b_block, is_own, row_lse, col_lse):
      logits = scale * a @ b_block.T
      row_lse = jnp.logaddexp(row_lse, jax.nn.logsumexp(logits, axis=1))
      col_lse = jnp.logaddexp(col_lse, jax.nn.logsumexp(logits, axis=0))
      return row_lse, col_lse

    start = jnp.full((n,), -jnp.inf, jnp.float32)
    row_lse, col_lse = _ring(block, (start, start), a, b, size)
    positives = scale * jnp.sum(a * b, axis=-1)
    return ((row_lse - positives) + (col_lse - positives)) / 2

  return jax.shard_map(local, in_specs=(P(AXIS), P(AXIS), P()), out_specs=P(AXIS))(
      a, b, jnp.asarray(logit_scale))


def ring_siglip_row_sums(a, b, logit_scale, logit_bias):
  """Per-row −Σ_j log σ(label_ij·logit_ij); SigLIP = mean of these."""
  size = _ring_size()
  if size == 1:
    return siglip_row_sums(a, b, logit_scale, logit_bias)

  def local(a, b, log_scale, bias):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    scale = jnp.exp(log_scale.astype(jnp.float32))
    n = a.shape[0]
    own_labels = 2.0 * jnp.eye(n, dtype=jnp.float32) - 1.0

    def block(a, b_block, is_own, row_sum, unused):
      logits = scale * a @ b_block.T + bias
      labels = jnp.where(is_own, own_labels, -1.0)
      return row_sum - jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1), unused

    row_sum, _ = _ring(block, (jnp.zeros((n,), jnp.float32), jnp.zeros((), jnp.float32)),
                       a, b, size)
    return row_sum

  return jax.shard_map(local, in_specs=(P(AXIS), P(AXIS), P(), P()), out_specs=P(AXIS))(
      a, b, jnp.asarray(logit_scale), jnp.asarray(logit_bias, jnp.float32))
