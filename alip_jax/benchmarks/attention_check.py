"""Does model.attention='cudnn' run cuDNN's fused kernel, and match XLA?

  python -m alip_jax.benchmarks.attention_check            # GPU: B/16 and text-B shapes
  python -m alip_jax.benchmarks.attention_check --smoke    # CPU: 'xla:8' padding vs ''

For the image tower's attention (197 tokens, 12 heads of 64, no mask) and
the text tower's (77 tokens, 8 heads of 64, causal), in bfloat16: whether
the compiled HLO calls cuDNN's fused attention (`__cudnn$fmha…`), the
largest difference of output and input gradients against XLA's attention
(relative to the largest XLA value), and the forward+backward time of each.
Prints one JSON line per shape.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp

from alip_jax.models import transformer

_SMOKE = flags.DEFINE_bool("smoke", False, "CPU: compare 'xla:8' (padded) with ''.")
_BATCH = flags.DEFINE_integer("batch", 256, "Batch of the attention inputs.")

SHAPES = {"image B/16": (197, 12, 64, False), "text B": (77, 8, 64, True)}


def forward_backward(attention: str, causal: bool):
  implementation, multiple = transformer.attention_spec(attention)

  def loss(q, k, v, cotangent):
    y = transformer.padded_attention(q, k, v, causal, implementation, multiple)
    return jnp.sum(y.astype(jnp.float32) * cotangent)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def timed(fn, *args, repeats: int = 10) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def check(name: str, batch: int, attention: str, reference: str) -> dict:
  length, heads, head_dim, causal = SHAPES[name]
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (batch, length, heads, head_dim), jnp.bfloat16)
             for key in keys[:3])
  cotangent = jax.random.normal(keys[3], (batch, length, heads, head_dim))
  fast, slow = forward_backward(attention, causal), forward_backward(reference, causal)
  hlo = fast.lower(q, k, v, cotangent).compile().as_text()
  (_, got), (_, want) = fast(q, k, v, cotangent), slow(q, k, v, cotangent)
  (y_got, y_want) = (jax.jit(lambda q, k, v, a=a: transformer.padded_attention(
      q, k, v, causal, *transformer.attention_spec(a)))(q, k, v) for a in (attention, reference))

  def relative(a, b):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())

  return {"shape": name, "batch": batch, "attention": attention, "reference": reference,
          "device": jax.devices()[0].device_kind,
          "cudnn_fused_attention_in_hlo": "__cudnn$fmha" in hlo,
          "output_rel_diff": relative(y_got, y_want),
          "grad_rel_diff": max(relative(g, w) for g, w in zip(got, want)),
          "fwd_bwd_ms": 1e3 * timed(fast, q, k, v, cotangent),
          "reference_fwd_bwd_ms": 1e3 * timed(slow, q, k, v, cotangent)}


def main(argv):
  del argv
  attention, reference = ("xla:8", "") if _SMOKE.value else ("cudnn", "xla")
  batch = 2 if _SMOKE.value else _BATCH.value
  for name in SHAPES:
    try:
      print(json.dumps(check(name, batch, attention, reference)), flush=True)
    except Exception as error:  # a refused shape is a result too
      print(json.dumps({"shape": name, "attention": attention,
                        "error": f"{type(error).__name__}: {str(error)[:1500]}"}), flush=True)


if __name__ == "__main__":
  app.run(main)
