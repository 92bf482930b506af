"""Memory and time of the contrastive loss + gradient, full vs chunked ring.

  python -m alip_jax.benchmarks.loss_memory [--sizes 4096,16384,32768] [--dim 512]
      [--losses infonce,siglip] [--devices 8] [--time_sizes 4096,16384,32768]

Builds a `--devices`-device mesh (forced CPU devices unless real ones exist),
compiles value_and_grad of the loss over a global batch sharded on 'data',
and prints per-device temporary memory from `compiled.memory_analysis()`
(what XLA allocates for intermediates: logits, softmax, gradients) and the
wall time of one step after a warm-up. On a CPU host the devices share the
machine's cores, so times are for comparing rows of one run, not absolute.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="4096,16384,32768")
  parser.add_argument("--time_sizes", default=None,
                      help="sizes to time (default: all of --sizes)")
  parser.add_argument("--dim", type=int, default=512, help="embedding width (B/32: 512)")
  parser.add_argument("--losses", default="infonce,siglip")
  parser.add_argument("--devices", type=int, default=8)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if "jax" not in sys.modules:  # forced host devices must be set before jax loads
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np

  from alip_jax import losses, mesh as mesh_lib

  mesh = mesh_lib.make_mesh(dict(data=args.devices, model=1),
                            jax.devices()[: args.devices])
  batch, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  sizes = [int(s) for s in args.sizes.split(",")]
  time_sizes = sizes if args.time_sizes is None else [int(s) for s in args.time_sizes.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ×{args.devices} ({jax.default_backend()}), "
        f"embedding dim {args.dim}, host cores {os.cpu_count()}")
  print("| loss | global batch | form | temp MiB / device | step s |")
  print("|---|---|---|---|---|")
  for loss_name in args.losses.split(","):
    for size in sizes:
      for form in ("full", "chunked"):
        cfg = ml_collections.ConfigDict({
            "name": "clip" if loss_name == "infonce" else "siglip", "path": "raw",
            "normalization": "mean_half", "chunked": "on" if form == "chunked" else "off"})

        def loss_fn(image, text, params, cfg=cfg):
          return losses.get(cfg).loss({"image": image, "raw": text}, params, {})[0]

        step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)),
                       in_shardings=(batch, batch, rep))
        shape = jax.ShapeDtypeStruct((size, args.dim), jnp.float32, sharding=batch)
        params = {"logit_scale": jnp.float32(2.3), "logit_bias": jnp.float32(-10.0)}
        with jax.set_mesh(mesh):
          compiled = step.lower(shape, shape, params).compile()
        temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
        seconds = "—"
        if size in time_sizes:
          rng = np.random.default_rng(0)
          emb = rng.normal(size=(size, args.dim)).astype(np.float32)
          emb /= np.linalg.norm(emb, axis=1, keepdims=True)
          image = jax.device_put(emb, batch)
          text = jax.device_put(np.roll(emb, 1, axis=1), batch)
          jax.block_until_ready(compiled(image, text, params))  # warm-up
          start = time.perf_counter()
          jax.block_until_ready(compiled(image, text, params))
          seconds = f"{time.perf_counter() - start:.2f}"
        print(f"| {loss_name} | {size} | {form} | {temp_mib:,.1f} | {seconds} |", flush=True)


if __name__ == "__main__":
  main()
