"""Does a recipe fit a TPU pod slice? Compile its train step for one, on any host.

  python -m alip_jax.benchmarks.tpu_compile --config configs/alip_yfcc15m.py:B/16 \
      --topology v5p:4x4x4 [--config.mesh.fsdp=-1 --config.mesh.data=1 ...] \
      [--out tpu_compile.jsonl]
  python -m alip_jax.benchmarks.tpu_compile --table tpu_compile.jsonl

Needs the `libtpu` package (alip-jax's [test] extra), no TPU: libtpu describes
the slice (`jax.experimental.topologies.get_topology_desc`) and compiles for
it on the CPU. The trainer's own pieces — `mesh.make_mesh` over the slice's
devices, the model, optimiser, loss and `step.jit_train_step`
with its shardings from the logical rules — are lowered with abstract
inputs (`jax.ShapeDtypeStruct`s with shardings: no data, no weights) and
compiled ahead of time. Reported, as one JSON line appended to --out and a
table row:

* compile success (or the error) and time;
* per-chip memory from `memory_analysis()`: arguments (train state + batch),
  outputs, temporaries and their total (outputs that alias the donated state
  counted once), against the chip's HBM (alip_jax/accelerators.py);
* XLA's FLOPs and bytes accessed per chip per step (`cost_analysis()`);
* an ESTIMATED step time from a roofline, max(FLOPs / peak bf16 FLOP/s,
  bytes / HBM bandwidth) per chip, and the MFU that step time would give
  (analytic model FLOPs, as the trainer's MFU line) — it leaves out
  collectives and stalls, so a real step is slower (see `estimate`);
* how many collectives of each kind the compiled program has.

Topologies are libtpu's names: 'v5e:16x16' (v5litepod-256), 'v5p:4x4x4'
(v5p-128, 64 chips), 'v4:4x4x2' (v4-64, 32 chips), 'v6e:8x8'; v4 and v5p are
compiled with one JAX device per chip (megacore), as on the real slice.

libtpu warns that TPU_ACCELERATOR_TYPE and TPU_WORKER_HOSTNAMES are unset:
on a TPU VM the metadata server provides them to the local runtime. A
compile-only topology does not use them; where unset they are filled in
with this topology's accelerator type and 'localhost', which silences it.
Nothing opens a chip, so ALLOW_MULTIPLE_LIBTPU_LOAD=1 lets several such
processes run at once (libtpu otherwise holds /tmp/libtpu_lockfile).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
import traceback

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from alip_jax import (accelerators, console, losses, mesh as mesh_lib, monitoring, state as state_lib,
                      step as step_lib)
from alip_jax.data.tokenizer import EOT_ID
from alip_jax.losses import chunked
from alip_jax.models import two_towers

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")
# An HLO instruction of a collective (async ones by their '-start' half).
_COLLECTIVE_RE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


def parse_topology(name: str) -> tuple[accelerators.TpuChip, int]:
  """'v5p:4x4x4' → (the chip, number of chips)."""
  generation, _, shape = name.partition(":")
  if generation not in accelerators.TPU_CHIPS or not re.fullmatch(r"\d+(x\d+)+", shape):
    raise ValueError(f"--topology {name!r}: expected GENERATION:AxB[xC] with a generation in "
                     f"{sorted(accelerators.TPU_CHIPS)}, e.g. v5e:16x16, v5p:4x4x4, v4:4x4x2")
  return accelerators.TPU_CHIPS[generation], math.prod(int(s) for s in shape.split("x"))


def topology_devices(name: str) -> list:
  """Compile-only devices of TPU slice `name` (one per chip)."""
  from jax.experimental import topologies
  chip, chips = parse_topology(name)
  os.environ.setdefault("TPU_ACCELERATOR_TYPE",
                        f"{chip.accelerator_prefix}-{chips * chip.cores_per_chip}")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  # No chip is opened: several processes (pytest workers) may load libtpu.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  topology = topologies.get_topology_desc(topology_name=name, platform="tpu",
                                          chip_config_name=chip.chip_config)
  return topology.devices


def abstract_batch(config, sharding) -> dict:
  """The global batch the pipeline delivers, as shapes with shardings."""
  n, size, length = config.train.batch_size, config.data.image_size, config.data.context_length
  spec = {"image": ((n, size, size, 3), jnp.uint8), "raw_tokens": ((n, length), jnp.int32),
          "caption_tokens": ((n, length), jnp.int32)}
  if losses.get(config.loss).num_views == 2:
    spec.update(image_view2=spec["image"], aug=((n, 2, 8), jnp.float32))
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in spec.items()}


def lower_train_step(config, devices, vocab: int):
  """The trainer's jitted step over `devices`, lowered with abstract inputs.
  Returns (lowered, mesh)."""
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  mesh_lib.check_batch_size(config.train.batch_size, mesh, 1)
  model = two_towers.from_config(config.model, vocab, config.data.context_length, eot_id=EOT_ID,
                                 **losses.get(config.loss).model_heads)
  # Outside the mesh context: compile-only devices cannot run the PRNG key.
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  with jax.set_mesh(mesh):  # the ring loss's shard_map runs over it
    batch = abstract_batch(config, mesh_lib.batch_sharding(mesh))
    return train_step.lower(spec.abstract, batch), mesh


def count_collectives(hlo_text: str) -> dict:
  counts = dict.fromkeys(COLLECTIVES, 0)
  for kind in _COLLECTIVE_RE.findall(hlo_text):
    counts[kind] += 1
  return counts


def _tower_name(value) -> str:
  return value if isinstance(value, str) else ",".join(f"{k}={v}" for k, v in sorted(dict(value).items()))


def _sig(x: float, digits: int = 4) -> float:
  return float(f"{x:.{digits}g}")


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else {}
  return cost or {}


def describe(config, topology: str) -> dict:
  """The run's settings, as the report's first fields."""
  chip, chips = parse_topology(topology)
  return {"topology": topology, "chip": chip.device_kind, "chips": chips,
          "image": _tower_name(config.model.image), "text": _tower_name(config.model.text),
          "objective": config.loss.name, "batch": config.train.batch_size,
          "ring_loss": chunked.use_chunked(config.loss, config.train.batch_size),
          "dtype": config.model.dtype, "remat": str(config.model.remat),
          "scan": bool(config.model.scan), "accum_steps": config.train.accum_steps}


def analyse(config, topology: str, vocab: int = 49408) -> dict:
  """Compiles the train step for `topology` and returns the report (a dict;
  'error' instead of the figures when lowering or compiling fails)."""
  chip, chips = parse_topology(topology)
  result = describe(config, topology)
  start = time.perf_counter()
  try:
    lowered, mesh = lower_train_step(config, topology_devices(topology), vocab)
    result["mesh"] = dict(mesh.shape)
    result["per_chip_batch"] = config.train.batch_size / mesh_lib.batch_size_divisor(mesh)
    compiled = lowered.compile()
  except Exception as e:  # noqa: BLE001 — the report says what failed
    result.update(compiled=False, compile_s=round(time.perf_counter() - start, 1),
                  error=f"{type(e).__name__}: {str(e)[:2000]}")
    logging.debug("%s", traceback.format_exc())
    return result
  result.update(compiled=True, compile_s=round(time.perf_counter() - start, 1))
  result.update(measure(compiled, config, chip, chips))
  result.update(estimate(result))
  return result


def measure(compiled, config, chip: accelerators.TpuChip, chips: int) -> dict:
  """Memory per chip, FLOPs and bytes and the collectives of a compiled
  train step."""
  result = {}
  memory = compiled.memory_analysis()
  gib = lambda name: getattr(memory, name, 0) / 2**30
  total = (gib("argument_size_in_bytes") + gib("output_size_in_bytes")
           - gib("alias_size_in_bytes") + gib("temp_size_in_bytes"))
  result.update(
      argument_gib=round(gib("argument_size_in_bytes"), 3),
      output_gib=round(gib("output_size_in_bytes"), 3),
      alias_gib=round(gib("alias_size_in_bytes"), 3),
      temp_gib=round(gib("temp_size_in_bytes"), 3),
      total_gib=round(total, 3), hbm_gib=chip.hbm_gib,
      hbm_used=round(total / chip.hbm_gib, 3), fits=total <= chip.hbm_gib)

  cost = _cost(compiled)
  model_flops = config.train.batch_size * monitoring.flops_per_sample(config)
  result.update(
      xla_tflop_per_chip=_sig(float(cost.get("flops", 0.0)) / 1e12),
      xla_gb_accessed_per_chip=_sig(float(cost.get("bytes accessed", 0.0)) / 1e9),
      model_tflop_per_step=_sig(model_flops / 1e12),
      collectives=count_collectives(compiled.as_text()))
  return result


def recompute_factor(r: dict) -> float:
  """Model FLOPs → executed FLOPs: full remat runs each block's forward
  again, GradCache (accum_steps > 1) runs one extra forward (3 → 4 each)."""
  return 1 + (r["remat"] == "full") / 3 + (r.get("accum_steps", 1) > 1) / 3


def estimate(r: dict) -> dict:
  """Roofline step time and MFU from a report's raw figures — an ESTIMATE:
  per chip, max(FLOPs / peak, bytes / HBM bandwidth); no collectives, no
  stalls, so a lower bound on the step time (an upper bound on MFU).

  FLOPs are XLA's count or, where larger, the analytic model FLOPs per chip
  × `recompute_factor`: with `model.scan` XLA counts a loop body once.
  For the same reason the bytes are an undercount with scan."""
  chip = accelerators.TPU_CHIPS[r["topology"].partition(":")[0]]
  model_flops = r["model_tflop_per_step"] * 1e12
  flops = max(r["xla_tflop_per_chip"] * 1e12,
              model_flops / r["chips"] * recompute_factor(r))
  compute_s = flops / (chip.peak_tflops * 1e12)
  memory_s = r["xla_gb_accessed_per_chip"] * 1e9 / (chip.hbm_gbps * 1e9)
  step_s = max(compute_s, memory_s)
  return {"est_step_s": _sig(step_s), "est_bound": "compute" if compute_s >= memory_s else "memory",
          "est_mfu": round(model_flops / r["chips"] / step_s / (chip.peak_tflops * 1e12), 3),
          "est_samples_per_s": round(r["batch"] / step_s)}


TABLE_HEADER = ("| topology | model | loss | batch | mesh (data,fsdp,model) | per-chip batch | remat / scan [/ accum] "
                "| compile s | args / temp / total GiB per chip | HBM used | est. step s | est. MFU "
                "| all-gather / reduce-scatter / all-reduce / coll.-permute / all-to-all |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: dict) -> str:
  mesh = ",".join(str(v) for v in r.get("mesh", {}).values()) or "—"
  model = f"{r['image']}" + (" ring" if r["ring_loss"] else "")
  setup = f"{r['remat']} / {'scan' if r['scan'] else 'no scan'}" + (
      f" / accum {r['accum_steps']}" if r.get("accum_steps", 1) > 1 else "")
  head = (f"| {r['topology']} | {model} | {r['objective']} | {r['batch']} | {mesh} | "
          f"{r.get('per_chip_batch', '—')} | {setup} | {r['compile_s']} |")
  if not r["compiled"]:
    return head + f" did not compile: {r['error'][:200]} | | | | |"
  counts = " / ".join(str(r["collectives"][k]) for k in COLLECTIVES)
  return (head + f" {r['argument_gib']:.2f} / {r['temp_gib']:.2f} / {r['total_gib']:.2f} | "
          f"{100 * r['hbm_used']:.0f} % of {r['hbm_gib']} GiB{'' if r['fits'] else ' (does NOT fit)'} | "
          f"{r['est_step_s']} ({r['est_bound']}) | {r['est_mfu']} | {counts} |")


def print_table(path: str) -> None:
  """The table of every report in a JSONL file (estimates re-derived)."""
  print(TABLE_HEADER)
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      print(table_row({**r, **estimate(r)} if r["compiled"] else r))


def define_flags():
  """Defined only when run as a program: train_step (which tests import
  beside this module) owns --config in the same process."""
  global _CONFIG, _TOPOLOGY, _VOCAB, _OUT, _TABLE
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:arg]).")
  _TOPOLOGY = flags.DEFINE_string("topology", None,
                                  "TPU slice, e.g. v5e:16x16, v5p:4x4x4, v4:4x4x2.")
  _VOCAB = flags.DEFINE_integer("vocab", 49408, "Text vocabulary size (CLIP BPE: 49408).")
  _OUT = flags.DEFINE_string("out", "tpu_compile.jsonl", "JSONL file the report line is appended to "
                             "('' = none).")
  _TABLE = flags.DEFINE_string("table", "",
                               "Only print the table of the reports in this JSONL file.")


def main(argv):
  del argv
  if _TABLE.value:
    print_table(_TABLE.value)
    return
  if not (_CONFIG.value and _TOPOLOGY.value):
    raise app.UsageError("--config and --topology are required")
  logging.getLogger("alip_jax").setLevel(logging.INFO)
  result = analyse(_CONFIG.value, _TOPOLOGY.value, _VOCAB.value)
  if _OUT.value:
    with open(_OUT.value, "a") as f:
      f.write(json.dumps(result) + "\n")
  print(json.dumps(result))
  print(TABLE_HEADER)
  print(table_row(result))
  if not result["compiled"]:
    raise SystemExit(1)


if __name__ == "__main__":
  define_flags()
  # configs/NAME.py resolves as in alip-train (alip_jax.console).
  app.run(main, argv=console.with_packaged_config(sys.argv))
