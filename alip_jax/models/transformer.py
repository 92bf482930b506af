"""Pre-LayerNorm transformer encoder shared by the image and text towers.

Matches the CLIP block (LayerNorm eps 1e-5, biased q/k/v/out projections,
fc → act → proj MLP) so public CLIP weights map onto it one to one. The
official ALIP code uses exact GELU; OpenAI's CLIP uses QuickGELU (`act`).

Every matrix carries logical axis names (`nn.with_logical_partitioning`);
`alip_jax.mesh.LOGICAL_RULES` maps them to mesh axes (DP / FSDP / TP).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LN_EPS = 1e-5
# Names of `model.remat` → what the backward pass keeps of each block.
REMAT_POLICIES = {
    "full": None,  # keep only the block input; recompute everything
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def dense_init(names):
  return nn.with_logical_partitioning(nn.initializers.lecun_normal(), names)


def zeros_init(names):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def activation(name: str):
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  if name == "gelu_tanh":  # the tanh approximation: cheaper, may fuse into the matmul epilogue
    return lambda x: nn.gelu(x, approximate=True)
  if name == "quick_gelu":  # OpenAI CLIP
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  raise ValueError(f"model.act must be 'gelu', 'gelu_tanh' or 'quick_gelu', got {name!r}")


# cuDNN's fused attention refuses CLIP's odd lengths (77 text tokens, 197
# B/16 patches) for training; padded to a multiple of 8 (80, 200) they pass.
CUDNN_PAD_MULTIPLE = 8


def attention_spec(value: str | None) -> tuple[str | None, int]:
  """`model.attention` → (jax.nn.dot_product_attention implementation,
  pad the sequence to a multiple of this, masked; 1 = no padding).
  '' / None: XLA's choice, 'xla', 'cudnn' (padded to CUDNN_PAD_MULTIPLE),
  or any of them with ':N' to pad to a multiple of N ('cudnn:64', 'xla:8')."""
  name, _, multiple = (value or "").partition(":")
  if name not in ("", "xla", "cudnn"):
    raise ValueError(f"model.attention must be '', 'xla' or 'cudnn' (optionally ':N', "
                     f"the padding multiple), got {value!r}")
  default = CUDNN_PAD_MULTIPLE if name == "cudnn" else 1
  return name or None, int(multiple) if multiple else default


def padded_attention(query, key, value, causal: bool, implementation: str | None,
                     multiple: int):
  """jax.nn.dot_product_attention over [B, T, heads, head_dim] with T padded
  up to a multiple of `multiple`: the padded keys are masked through
  `key_value_seq_lengths` (the padded queries' rows are dropped), so the
  result equals the unpadded attention."""
  length = query.shape[1]
  padded = -(-length // multiple) * multiple
  if padded == length:
    return jax.nn.dot_product_attention(query, key, value, is_causal=causal,
                                        implementation=implementation)
  widths = ((0, 0), (0, padded - length), (0, 0), (0, 0))
  query, key, value = (jnp.pad(t, widths) for t in (query, key, value))
  lengths = jnp.full((query.shape[0],), length, jnp.int32)
  y = jax.nn.dot_product_attention(query, key, value, is_causal=causal,
                                   query_seq_lengths=lengths, key_value_seq_lengths=lengths,
                                   implementation=implementation)
  return y[:, :length]


class Attention(nn.Module):
  """Multi-head self-attention; `causal` masks future positions (text)."""
  num_heads: int
  causal: bool = False
  dtype: Any = jnp.float32
  implementation: str | None = None  # model.attention: see attention_spec

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by {self.num_heads} heads")
    head_dim = width // self.num_heads

    def project(name):
      return nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name,
                             kernel_init=dense_init(("embed", "heads", "kv")),
                             bias_init=zeros_init(("heads", "kv")))(x)

    y = padded_attention(project("query"), project("key"), project("value"), self.causal,
                         *attention_spec(self.implementation))
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, name="out",
                           kernel_init=dense_init(("heads", "kv", "embed")),
                           bias_init=zeros_init(("embed",)))(y)


class MlpBlock(nn.Module):
  mlp_dim: int
  act: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc",
                 kernel_init=dense_init(("embed", "mlp")), bias_init=zeros_init(("mlp",)))(x)
    x = activation(self.act)(x)
    return nn.Dense(width, dtype=self.dtype, name="proj",
                    kernel_init=dense_init(("mlp", "embed")), bias_init=zeros_init(("embed",)))(x)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  causal: bool = False
  act: str = "gelu"
  dtype: Any = jnp.float32
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x, _=None):
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_1")(x)
    x = x + Attention(self.num_heads, self.causal, self.dtype, self.attention_impl,
                      name="attn")(y)
    y = nn.LayerNorm(epsilon=LN_EPS, dtype=self.dtype, name="ln_2")(x)
    x = x + MlpBlock(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
    return x, None  # (carry, output) so the block also runs under nn.scan


@dataclasses.dataclass(frozen=True)
class Tower:
  """What the image and the text tower share, described once: their sizes
  (zoo.py's width, depth, heads), the joint embedding width, and how they
  compute (`model.dtype`, `remat`, `scan`, `act`, `attention`)."""
  width: int
  depth: int
  heads: int
  embed_dim: int
  dtype: Any = jnp.float32
  remat: str = "none"
  scan: bool = False
  act: str = "gelu"
  attention: str | None = None

  def encoder(self, causal: bool = False) -> "Encoder":
    """The tower's blocks (call inside the tower's compact method)."""
    return Encoder(self.depth, self.heads, causal=causal, act=self.act, dtype=self.dtype,
                   remat=self.remat, scan=self.scan, attention_impl=self.attention,
                   name="encoder")


class Encoder(nn.Module):
  """`depth` blocks named block00, block01, … or, with `scan`, one scanned
  block whose parameters are stacked along a leading 'layers' axis (one
  compiled body instead of `depth` copies: much shorter compiles)."""
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  causal: bool = False
  act: str = "gelu"
  dtype: Any = jnp.float32
  remat: str = "none"  # 'none' | a key of REMAT_POLICIES
  scan: bool = False
  attention_impl: str | None = None

  @nn.compact
  def __call__(self, x):
    block = EncoderBlock
    if self.remat != "none":
      if self.remat not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be 'none' or one of {sorted(REMAT_POLICIES)}, "
                         f"got {self.remat!r}")
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
    args = (self.num_heads, int(x.shape[-1] * self.mlp_ratio), self.causal, self.act,
            self.dtype, self.attention_impl)
    if self.scan:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      length=self.depth, metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(*args, name="blocks")(x, None)
      return x
    for i in range(self.depth):
      x, _ = block(*args, name=f"block{i:02d}")(x)
    return x


def remat_name(value) -> str:
  """`model.remat` accepts the old booleans: False → 'none', True → 'full'."""
  if value is True:
    return "full"
  if value is False or value is None:
    return "none"
  return str(value)


def _is_encoder(tree) -> bool:
  return isinstance(tree, dict) and (
      "blocks" in tree or (tree and all(k.startswith("block") for k in tree)))


def stack_layers(params):
  """Unscanned params (encoder/block00, block01, …) → the `model.scan=True`
  layout (encoder/blocks with a leading layer axis). Idempotent."""
  if not isinstance(params, dict):
    return params
  if _is_encoder(params) and "blocks" not in params:
    blocks = [params[k] for k in sorted(params)]
    return {"blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}
  return {k: stack_layers(v) for k, v in params.items()}


def unstack_layers(params):
  """The inverse of `stack_layers`. Idempotent."""
  if not isinstance(params, dict):
    return params
  if _is_encoder(params) and "blocks" in params:
    depth = jax.tree.leaves(params["blocks"])[0].shape[0]
    return {f"block{i:02d}": jax.tree.map(lambda x, i=i: x[i], params["blocks"])
            for i in range(depth)}
  return {k: unstack_layers(v) for k, v in params.items()}
