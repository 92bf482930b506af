"""Train-step benchmark: FLOPs, step time, samples/s, MFU and peak memory.

  python -m alip_jax.benchmarks.train_step --config configs/alip_yfcc15m.py:B/16 \
      --config.train.batch_size=1024 --steps 20

Runs the real jitted ALIP train step (`state.state_spec` and `step.jit_train_step`, as the trainer) on a
random batch already on the devices, so it measures the model, loss and
optimiser, not the input pipeline. Prints one JSON line:

* model_tflop_per_step: analytic 3 × forward matmul FLOPs of the objective
  (`monitoring.flops_per_sample`, the trainer's count),
  what MFU conventionally counts (no remat recomputation);
* xla_tflop_per_step: what XLA's `cost_analysis` of the compiled step counts,
  summed over devices (includes recomputation, elementwise work, the loss);
* step_s (median), samples_per_s, mfu = model FLOPs / (step_s × peak ×
  devices), hfu likewise from the XLA count;
* compile_s; peak_memory_gib (the device allocator's peak where it reports
  one, GPU/TPU) and XLA's memory_analysis (temporaries, arguments).

--peak_tflops is the per-device dense peak (default: 989 for H100/H200 bf16;
required elsewhere for MFU). On CPU only compare figures within one run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from alip_jax import console, losses, mesh as mesh_lib, monitoring, state as state_lib, step as step_lib
from alip_jax.data.tokenizer import EOT_ID
from alip_jax.losses import uniclip
from alip_jax.models import two_towers

HLO_FILE = "train_step.hlo.txt"  # beside a trace: the compiled step, for benchmarks.profile_step

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")
_VOCAB = flags.DEFINE_integer("vocab", 49408, "Text vocabulary size (CLIP BPE: 49408).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Per-device peak TFLOP/s (0 = known GPUs).")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only lower and compile (FLOPs, "
                                  "memory, compile time); no steps.")



def random_batch(config, vocab, sharding):
  rng = np.random.default_rng(0)
  n, size, length = config.train.batch_size, config.data.image_size, config.data.context_length
  lengths = rng.integers(5, length - 1, size=(2, n))
  tokens = rng.integers(4, vocab, size=(2, n, length), dtype=np.int32)
  positions = np.arange(length)
  tokens = np.where(positions < lengths[..., None], tokens, 0)
  tokens[:, :, 0] = 2
  tokens[np.arange(2)[:, None], np.arange(n)[None], lengths] = 3  # EOT
  batch = {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
           "raw_tokens": tokens[0], "caption_tokens": tokens[1]}
  if losses.get(config.loss).num_views == 2:  # UniCLIP: a second view and both views' parameters
    batch["image_view2"] = batch["image"][::-1].copy()
    batch["aug"] = rng.random((n, 2, uniclip.AUG_DIM), dtype=np.float32)
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def _tower_name(value) -> str:
  return value if isinstance(value, str) else ",".join(f"{k}={v}" for k, v in sorted(dict(value).items()))


def _xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def run(config, steps: int, vocab: int, peak_tflops: float, compile_only: bool = False,
        devices=None, warmup: int = 2, trace_dir: str | None = None) -> dict:
  """`trace_dir`: a jax.profiler trace of the timed steps goes there, with
  the compiled step's HLO (HLO_FILE)."""
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  devices = mesh.devices.size
  model = two_towers.from_config(config.model, vocab, config.data.context_length, eot_id=EOT_ID,
                                 **losses.get(config.loss).model_heads)
  with jax.set_mesh(mesh):
    spec = state_lib.state_spec(model, config, mesh)
    train_step = step_lib.jit_train_step(model, config, spec, mesh)
    state = spec.initialise(jax.random.key(0))
    batch = random_batch(config, vocab, mesh_lib.batch_sharding(mesh))
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    result = {
        "device": jax.devices()[0].device_kind, "devices": devices,
        "mesh": dict(mesh.shape), "image": _tower_name(config.model.image),
        "text": _tower_name(config.model.text), "dtype": config.model.dtype,
        "remat": str(config.model.remat), "scan": bool(config.model.scan),
        "objective": config.loss.name, "batch": config.train.batch_size,
        "compile_s": round(compile_s, 2),
        "model_tflop_per_step": monitoring.flops_per_sample(config)
                                * config.train.batch_size / 1e12,
        # cost_analysis is per device program under SPMD: × devices.
        "xla_tflop_per_step": _xla_flops(compiled) * devices / 1e12,
        "xla_temp_gib_per_device": getattr(memory, "temp_size_in_bytes", 0) / 2**30,
        "xla_argument_gib_per_device": getattr(memory, "argument_size_in_bytes", 0) / 2**30,
    }
    if not compile_only:
      times = []
      for i in range(steps + warmup):
        if i == warmup and trace_dir:
          jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
          os.makedirs(trace_dir, exist_ok=True)
          with open(os.path.join(trace_dir, HLO_FILE), "w") as f:  # names the trace's ops
            f.write(compiled.as_text())
        start = time.perf_counter()
        state, summary = compiled(state, batch)
        jax.block_until_ready(summary["loss"])
        if i >= warmup:
          times.append(time.perf_counter() - start)
      if trace_dir:
        jax.profiler.stop_trace()
      step_s = statistics.median(times)
      result.update(step_s=round(step_s, 5), samples_per_s=round(config.train.batch_size / step_s, 1),
                    loss=float(summary["loss"]))
      if peak_tflops:
        result["peak_tflops_per_device"] = peak_tflops
        result["mfu"] = round(result["model_tflop_per_step"] / step_s / (peak_tflops * devices), 4)
        result["hfu"] = round(result["xla_tflop_per_step"] / step_s / (peak_tflops * devices), 4)
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    result["peak_memory_gib"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
  return result


def main(argv):
  del argv
  peak = monitoring.peak_tflops(_PEAK.value)
  print(json.dumps(run(_CONFIG.value, _STEPS.value, _VOCAB.value, peak, _COMPILE_ONLY.value)))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])  # here: benchmarks.profile_step reuses these flags
  # configs/NAME.py resolves as in alip-train (alip_jax.console).
  app.run(main, argv=console.with_packaged_config(sys.argv))
