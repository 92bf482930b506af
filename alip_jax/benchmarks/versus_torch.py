"""alip_jax against open_clip (PyTorch) on the same device, model and batch.

  python -m alip_jax.benchmarks.versus_torch --out /tmp/versus       # GPU: B/16 + text B
  python -m alip_jax.benchmarks.versus_torch --smoke --out /tmp/vs   # CPU: tiny towers

Two workloads on the same towers (ViT-B/16 + text B, 224 px, 77 tokens,
exact GELU), bf16 compute over fp32 master weights, AdamW, clip 1.0:

* pairs: one image + one text per sample (alip_jax: loss=clip path=raw);
* triplets: one image + two texts (alip_jax: the ALIP loss with its gates;
  open_clip: the same bi-path InfoNCE without the gates, see
  torch_clip_step.py).

Every case runs in its own subprocess (JAX and torch never share the
device's memory): the device's measured bf16 matmul rate, alip_jax per
workload (`train_step.run`: 3 warm-ups, median of --steps), open_clip eager
per workload (the same) and, with --compile, open_clip under torch.compile.
samples/s, MFU from the one analytic count (`monitoring.flops_per_sample`,
the trainer's) over --peak (989: H100/H200 bf16 dense), the same
against the measured matmul rate, and peak device memory go to
<out>/results.jsonl and a printed table. A case that fails or runs past
--case_timeout is a row with its error; the others still run.

The torch side runs with --torch_python (default: $ALIP_TORCH_PYTHON, else
./.venv-torch/bin/python when present, else this Python); it needs torch and
open_clip_torch, not jax.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags


def define_flags():
  """Defined only when run as a program, so that tests can import this
  module beside the other benchmarks (--out, --smoke, --batch are common names)."""
  global _OUT, _SMOKE, _IMAGE, _BATCH, _STEPS, _WARMUP, _WORKLOADS, _COMPILE, _PEAK
  global _ATTENTION, _TORCH_PYTHON, _TIMEOUT, _CASE
  _OUT = flags.DEFINE_string("out", "/tmp/versus_torch", "Directory for results.jsonl.")
  _SMOKE = flags.DEFINE_bool("smoke", False, "Tiny towers on CPU (a rehearsal; CI runs it).")
  _IMAGE = flags.DEFINE_string("image", "B/16", "Image tower (models.zoo name).")
  _BATCH = flags.DEFINE_integer("batch", 512, "Samples per step (both sides).")
  # (Not --steps / --peak_tflops: train_step, which the cases import, owns those.)
  _STEPS = flags.DEFINE_integer("timed_steps", 15, "Timed steps per case (median).")
  _WARMUP = flags.DEFINE_integer("warmup", 3, "Warm-up steps per case.")
  _WORKLOADS = flags.DEFINE_list("workloads", ["pairs", "triplets"], "pairs, triplets.")
  _COMPILE = flags.DEFINE_bool("compile", False, "Also time open_clip under torch.compile.")
  _PEAK = flags.DEFINE_float("peak", 989.0, "Dense bf16 peak per device for MFU.")
  _ATTENTION = flags.DEFINE_string("attention", "", "alip_jax's model.attention ('', 'cudnn', …).")
  _TORCH_PYTHON = flags.DEFINE_string("torch_python", "", "Python with torch + open_clip_torch.")
  _TIMEOUT = flags.DEFINE_integer("case_timeout", 600, "Seconds per case.")
  _CASE = flags.DEFINE_string("case", "", "Internal: run one case in this process.")

SMOKE = dict(image=dict(patch_size=8, width=64, depth=2, heads=2), text=dict(width=64, depth=2,
             heads=2), embed_dim=32, image_size=32, context_length=16, vocab=1000, batch=8,
             steps=2, warmup=1)
WORKLOAD_LOSS = {"pairs": ("clip", "raw"), "triplets": ("alip", "both")}
MODULE = "alip_jax.benchmarks.versus_torch"


def workload_config(workload: str, smoke: bool, image: str, batch: int, attention: str):
  """The alip_jax config of one workload: paper-scale towers, or SMOKE."""
  import ml_collections
  from alip_jax.configs import alip_yfcc15m
  config = alip_yfcc15m.get_config(image)
  config.loss.name, config.loss.path = WORKLOAD_LOSS[workload]
  config.optim.grad_clip = 1.0
  config.model.attention = attention
  config.mesh = dict(data=-1)
  config.train.batch_size = batch
  if smoke:
    config.model = ml_collections.ConfigDict({**config.model.to_dict(), "image": SMOKE["image"],
                                              "text": SMOKE["text"],
                                              "embed_dim": SMOKE["embed_dim"]})
    config.data.image_size, config.data.context_length = SMOKE["image_size"], SMOKE["context_length"]
    config.model.dtype = "float32"  # bf16 matmuls are slow on CPUs; the GPU run is bf16
  return config


def torch_spec(config, workload: str, vocab: int, steps: int, warmup: int, compile_: bool) -> dict:
  from alip_jax.models import zoo
  return dict(image=zoo.image_tower(config.model.image), text=zoo.text_tower(config.model.text),
              embed_dim=config.model.embed_dim, image_size=config.data.image_size,
              context_length=config.data.context_length, vocab=vocab,
              batch=config.train.batch_size, workload=workload, steps=steps, warmup=warmup,
              dtype=config.model.dtype, compile=compile_)


def matmul_tflops(size: int, dtype: str, repeats: int = 10) -> dict:
  """The device's achieved matmul rate (size³, median of `repeats`)."""
  import jax
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(a, b).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return {"matmul_size": size, "matmul_dtype": dtype, "device": jax.devices()[0].device_kind,
          "matmul_tflops": 2 * size**3 / statistics.median(times) / 1e12}


def run_case(case: str) -> dict:
  """In the child process: 'matmul' or 'jax:<workload>'."""
  if case == "matmul":
    # The smoke run's model is float32 (see workload_config), so is its matmul.
    return matmul_tflops(256, "float32") if _SMOKE.value else matmul_tflops(8192, "bfloat16")
  from alip_jax.benchmarks import train_step
  workload = case.split(":")[1]
  vocab = SMOKE["vocab"] if _SMOKE.value else 49408
  config = workload_config(workload, _SMOKE.value, _IMAGE.value, _BATCH.value, _ATTENTION.value)
  result = train_step.run(config, _STEPS.value, vocab, peak_tflops=0.0, warmup=_WARMUP.value)
  return {k: result[k] for k in ("device", "step_s", "samples_per_s", "compile_s", "loss",
                                 "peak_memory_gib") if k in result}


def torch_python() -> str:
  if _TORCH_PYTHON.value:
    return _TORCH_PYTHON.value
  if os.environ.get("ALIP_TORCH_PYTHON"):
    return os.environ["ALIP_TORCH_PYTHON"]
  local = os.path.join(".venv-torch", "bin", "python")  # a checkout's, run from its root
  return os.path.abspath(local) if os.path.exists(local) else sys.executable


def spawn(command: list[str]) -> dict:
  """One case in a subprocess; its last stdout line is its JSON result."""
  start = time.perf_counter()
  try:
    run = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {_TIMEOUT.value} s"}
  lines = run.stdout.strip().splitlines()
  if run.returncode or not lines:
    return {"error": f"exit {run.returncode}: {run.stderr.strip()[-2000:]}"}
  return {**json.loads(lines[-1]), "case_wall_s": round(time.perf_counter() - start, 1)}


def cases(args: list[str], batch: int, steps: int, warmup: int):
  """(name, framework, workload, command) of every case, matmul first."""
  yield "matmul", "jax", "-", [sys.executable, "-m", MODULE, "--case=matmul", *args]
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_clip_step.py")
  vocab = SMOKE["vocab"] if _SMOKE.value else 49408
  for workload in _WORKLOADS.value:
    yield f"jax:{workload}", "alip_jax", workload, [
        sys.executable, "-m", MODULE, f"--case=jax:{workload}", *args]
    config = workload_config(workload, _SMOKE.value, _IMAGE.value, batch, "")
    for compile_ in (False, True) if _COMPILE.value else (False,):
      spec = torch_spec(config, workload, vocab, steps, warmup, compile_)
      name = "open_clip compile" if compile_ else "open_clip eager"
      yield f"torch:{workload}", name, workload, [torch_python(), script, json.dumps(spec)]


def main(argv):
  del argv
  if _CASE.value:
    print(json.dumps(run_case(_CASE.value)))
    return
  from alip_jax import monitoring
  batch, steps, warmup = ((SMOKE["batch"], SMOKE["steps"], SMOKE["warmup"]) if _SMOKE.value
                          else (_BATCH.value, _STEPS.value, _WARMUP.value))
  args = [f"--image={_IMAGE.value}", f"--batch={batch}", f"--timed_steps={steps}",
          f"--warmup={warmup}", f"--attention={_ATTENTION.value}"] + (
              ["--smoke"] if _SMOKE.value else [])
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, "results.jsonl")
  rows, matmul = [], {}
  with open(path, "a") as out:
    for name, framework, workload, command in cases(args, batch, steps, warmup):
      print(f"running {name} ({framework}) …", file=sys.stderr, flush=True)
      row = {"case": name, "framework": framework, "workload": workload, "batch": batch,
             "image": "smoke" if _SMOKE.value else _IMAGE.value, **spawn(command)}
      if name == "matmul":
        matmul = row
      elif "step_s" in row:
        config = workload_config(workload, _SMOKE.value, _IMAGE.value, batch, "")
        row["gflop_per_sample"] = monitoring.flops_per_sample(config) / 1e9
        achieved = row["gflop_per_sample"] * row["samples_per_s"] / 1e3  # TFLOP/s
        row["mfu"], row["peak_tflops"] = achieved / _PEAK.value, _PEAK.value
        if "matmul_tflops" in matmul:
          row["of_measured_matmul"] = achieved / matmul["matmul_tflops"]
      row["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
      out.write(json.dumps(row) + "\n")
      out.flush()
      rows.append(row)
  print(table(rows, matmul))
  print(f"results: {path}")


def table(rows: list[dict], matmul: dict) -> str:
  lines = [f"{matmul['device']}: measured {matmul['matmul_dtype']} matmul "
           f"({matmul['matmul_size']}³) {matmul['matmul_tflops']:.2f} TFLOP/s"
           if "matmul_tflops" in matmul else f"matmul: {matmul.get('error', 'not run')}",
           "| workload | framework | samples/s | step ms | MFU | of matmul | peak GiB | vs open_clip eager |",
           "|---|---|---|---|---|---|---|---|"]
  eager = {r["workload"]: r.get("samples_per_s") for r in rows if r["framework"] == "open_clip eager"}
  for r in rows:
    if r["case"] == "matmul":
      continue
    if "error" in r:
      lines.append(f"| {r['workload']} | {r['framework']} | failed: {r['error'][-150:]!r} |")
      continue
    speedup = (f"{r['samples_per_s'] / eager[r['workload']]:.2f}×"
               if eager.get(r["workload"]) else "")
    of_matmul = f"{100 * r['of_measured_matmul']:.1f} %" if "of_measured_matmul" in r else ""
    lines.append(f"| {r['workload']} | {r['framework']} | {r['samples_per_s']:.1f} | "
                 f"{1e3 * r['step_s']:.1f} | {100 * r['mfu']:.2f} % | {of_matmul} | "
                 f"{r.get('peak_memory_gib', '')} | {speedup} |")
  lines.append("triplets: open_clip runs the same bi-path InfoNCE without ALIP's gates.")
  return "\n".join(lines)


if __name__ == "__main__":
  define_flags()
  app.run(main)
