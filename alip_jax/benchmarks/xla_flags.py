"""A/B of XLA flags and model options on the train step, one process each.

  python -m alip_jax.benchmarks.xla_flags --config configs/alip_yfcc15m.py:B/16 \
      --batch 512 --steps 15 --out /tmp/flags
  python -m alip_jax.benchmarks.xla_flags --config configs/demo.py --smoke --out /tmp/flags

Every variant is `name=ARGS`: ARGS starting with `--xla_` are appended to
XLA_FLAGS, the rest go to `alip_jax.benchmarks.train_step` (e.g.
`--config.model.attention=cudnn`). Each runs `train_step` in its own
subprocess (XLA reads its flags once per process) and the table gives
samples/s and MFU against the first variant (the baseline). A variant that
fails (an unknown flag, a kernel that refuses the shapes) is a row with its
error. --budget_s stops starting variants when the next one would not fit
(estimated from the slowest so far). Results: <out>/xla_flags.jsonl.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags

from alip_jax import console

# The GPU candidates, in the order they run (the most promising first, so a
# short budget still measures them). Each is one change against the baseline.
GPU_VARIANTS = (
    "baseline=",
    "attention_cudnn=--config.model.attention=cudnn",
    "attention_cudnn_pad64=--config.model.attention=cudnn:64",
    "gelu_tanh=--config.model.act=gelu_tanh",
    "cudnn_layer_norm=--xla_gpu_enable_cudnn_layer_norm=true",
    "latency_hiding_scheduler=--xla_gpu_enable_latency_hiding_scheduler=true",
    "no_triton_gemm=--xla_gpu_enable_triton_gemm=false",
    "cublaslt=--xla_gpu_enable_cublaslt=true",
    "no_command_buffer=--xla_gpu_enable_command_buffer=",
)
# A CPU rehearsal: a padded attention and an XLA flag that CPUs accept.
SMOKE_VARIANTS = ("baseline=", "attention_xla_pad8=--config.model.attention=xla:8",
                  "gelu_tanh=--config.model.act=gelu_tanh",
                  "cudnn_layer_norm=--xla_gpu_enable_cudnn_layer_norm=true")
SMOKE_ARGS = ("--config.data.synthetic=False", "--config.mesh.data=1", "--vocab=1000")


def define_flags():
  """Defined only when run as a program: train_step (which tests import
  beside this module) owns --config and --steps in the same process."""
  global _CONFIG, _BATCH, _STEPS, _VARIANTS, _SMOKE, _OUT, _BUDGET, _TIMEOUT
  _CONFIG = flags.DEFINE_string("config", "configs/alip_yfcc15m.py:B/16", "train_step's --config.")
  _BATCH = flags.DEFINE_integer("batch", 512, "Samples per step.")
  _STEPS = flags.DEFINE_integer("steps", 15, "Timed steps per variant.")
  _VARIANTS = flags.DEFINE_multi_string("variant", None, "name=ARGS (default: GPU_VARIANTS).")
  _SMOKE = flags.DEFINE_bool("smoke", False, "CPU rehearsal: tiny batch, SMOKE_VARIANTS.")
  _OUT = flags.DEFINE_string("out", "/tmp/xla_flags", "Directory for xla_flags.jsonl.")
  _BUDGET = flags.DEFINE_float("budget_s", 0, "Stop starting variants after this many seconds "
                               "(0: no limit).")
  _TIMEOUT = flags.DEFINE_integer("variant_timeout", 600, "Seconds per variant.")


def parse_variant(text: str) -> tuple[str, list[str], list[str]]:
  """'name=ARGS' → (name, XLA flags, train_step arguments)."""
  name, sep, rest = text.partition("=")
  if not sep or not name or name.startswith("-"):
    raise ValueError(f"a variant is name=ARGS, got {text!r}")
  args = shlex.split(rest)
  return name, [a for a in args if a.startswith("--xla_")], [
      a for a in args if not a.startswith("--xla_")]


def run_variant(xla_flags: list[str], args: list[str]) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *xla_flags]).strip()
  command = [sys.executable, "-m", "alip_jax.benchmarks.train_step", f"--config={_CONFIG.value}",
             f"--config.train.batch_size={8 if _SMOKE.value else _BATCH.value}",
             f"--steps={_STEPS.value}", *args]
  try:
    run = subprocess.run(command, env=env, capture_output=True, text=True,
                         timeout=_TIMEOUT.value)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {_TIMEOUT.value} s"}
  lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
  if run.returncode or not lines:
    return {"error": f"exit {run.returncode}: {run.stderr.strip()[-1500:]}"}
  return json.loads(lines[-1])


def main(argv):
  del argv
  variants = _VARIANTS.value or (SMOKE_VARIANTS if _SMOKE.value else GPU_VARIANTS)
  extra = list(SMOKE_ARGS) if _SMOKE.value else []
  os.makedirs(_OUT.value, exist_ok=True)
  path = os.path.join(_OUT.value, "xla_flags.jsonl")
  start, slowest, rows = time.perf_counter(), 0.0, []
  with open(path, "a") as out:
    for text in variants:
      name, xla_flags, args = parse_variant(text)
      elapsed = time.perf_counter() - start
      if _BUDGET.value and rows and elapsed + slowest > _BUDGET.value:
        rows.append({"variant": name, "error": f"skipped: {elapsed:.0f} s of the "
                     f"{_BUDGET.value:.0f} s budget used"})
        continue
      print(f"variant {name}: XLA_FLAGS+={' '.join(xla_flags)} {' '.join(args)}",
            file=sys.stderr, flush=True)
      began = time.perf_counter()
      row = {"variant": name, "xla_flags": xla_flags, "args": args,
             **run_variant(xla_flags, extra + args)}
      row["wall_s"] = round(time.perf_counter() - began, 1)
      slowest = max(slowest, row["wall_s"])
      out.write(json.dumps(row) + "\n")
      out.flush()
      rows.append(row)
  print(table(rows))
  print(f"results: {path}")


def table(rows: list[dict]) -> str:
  base = rows[0].get("samples_per_s") if rows else None
  lines = ["| variant | samples/s | step ms | MFU | vs baseline | peak GiB | compile s |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    if "error" in r:
      lines.append(f"| {r['variant']} | failed: {r['error'][-150:]!r} |")
      continue
    mfu = f"{100 * r['mfu']:.1f} %" if "mfu" in r else ""
    ratio = f"{r['samples_per_s'] / base:.3f}×" if base else ""
    lines.append(f"| {r['variant']} | {r['samples_per_s']:.1f} | {1e3 * r['step_s']:.1f} | {mfu} "
                 f"| {ratio} | {r.get('peak_memory_gib', '')} | {r.get('compile_s', '')} |")
  return "\n".join(lines)


if __name__ == "__main__":
  define_flags()
  # configs/NAME.py resolves as in alip-train (alip_jax.console).
  app.run(main, argv=console.with_packaged_config(sys.argv))
