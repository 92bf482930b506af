"""Where the train step's time goes: a jax.profiler trace, summarised.

  python -m alip_jax.benchmarks.profile_step --config configs/alip_yfcc15m.py:B/16 \
      --config.train.batch_size=512 --steps 5 --out /tmp/profile
  python -m alip_jax.benchmarks.profile_step --trace /tmp/workdir/profile   # an existing trace

Runs the real train step (`train_step.run`, random batch on the devices)
for --steps steps (train_step's flags) under `jax.profiler` after the
warm-up, then reads the
trace (perfetto_trace.json.gz, Chrome trace format) and prints the device
time by group (matmul / attention / elementwise / other) and the top
kernels. On a GPU the kernels are the events on the device's streams
(cuBLAS / nvjet / cutlass gemms, cuDNN attention, XLA fusions); on a CPU,
the XLA thunks on the executor threads (the grouping reads both naming
schemes). The trainer's `train.profile_steps` trace can be summarised with
--trace. The summary also goes to <out>/profile_summary.json.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys

from absl import app, flags

# --config, --steps, --vocab, --peak_tflops: train_step's flags.
from alip_jax import console
from alip_jax.benchmarks import train_step

FLAGS = flags.FLAGS
_OUT = flags.DEFINE_string("out", "/tmp/alip_profile", "Trace and summary directory.")
_TRACE = flags.DEFINE_string("trace", "", "Summarise this existing trace directory instead.")
_TOP = flags.DEFINE_integer("top", 15, "Kernels listed.")

# Checked in this order (collectives and copies first: 'AllReduce' is no
# elementwise reduce): a cuDNN attention kernel may also say 'gemm'; XLA
# names a matmul fusion 'gemm_fusion…' or '…dot…'. Lower-case substrings.
GROUPS = (
    ("other", ("nccl", "all-reduce", "all-gather", "reduce-scatter", "memcpy", "memset")),
    ("attention", ("fmha", "flash", "sdpa", "attention", "softmax")),
    ("matmul", ("gemm", "nvjet", "cublas", "cutlass", "xmma", "matmul", "dot", "convolution")),
    ("elementwise", ("fusion", "loop_", "input_", "reduce", "convert", "add", "multiply",
                     "subtract", "divide", "transpose", "copy", "broadcast", "select", "exp",
                     "tanh", "erf", "log", "rsqrt", "sqrt", "maximum", "minimum", "compare",
                     "concatenate", "slice", "pad", "negate", "power", "iota", "elementwise")),
)
# Bookkeeping the CPU runtime records on its executor threads, not work.
_NOT_KERNELS = ("::", "end: ", "Thunk", "Threadpool")


def kernel_group(name: str) -> str:
  lower = name.lower()
  for group, needles in GROUPS:
    if any(n in lower for n in needles):
      return group
  return "other"


def hlo_groups(hlo_text: str) -> dict[str, str]:
  """HLO op name → group, from the compiled step's text: a fusion is a
  matmul when its computation holds a dot/convolution or a cuBLAS call,
  attention when it holds cuDNN's fused attention, else elementwise. (CPU
  matmuls run as 'ynn_fusion.N', which the name alone does not tell.)"""
  computations, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if header:
      current = computations.setdefault(header.group(1), [])
    elif line.startswith("}"):
      current = None
    elif current is not None:
      current.append(line)

  def group_of(text):
    if "fmha" in text or "flash" in text:
      return "attention"
    if " dot(" in text or " convolution(" in text or "cublas" in text:
      return "matmul"
    return None

  groups = {}
  for body in computations.values():
    for line in body:
      op = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
      if not op:
        continue
      rest = op.group(2)
      called = "\n".join("\n".join(computations.get(c, []))
                         for c in re.findall(r"calls=%?([\w.\-]+)", rest))
      group = group_of(rest + "\n" + called)
      if group or " fusion(" in rest:
        groups[op.group(1)] = group or "elementwise"
  return groups


def find_trace(directory: str) -> str:
  paths = sorted(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
                 + glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"),
                             recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz or perfetto_trace.json.gz under {directory}: "
                            f"is it a jax.profiler trace directory?")
  return paths[-1]


def kernel_events(trace: dict) -> list[dict]:
  """The device's kernel events: on GPU/TPU the '/device:…' processes'
  stream threads (not their 'XLA Ops'/'Steps' summary lines); on a CPU the
  XLA executor threads of '/host:CPU'."""
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  processes = {e["pid"]: e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "process_name"}
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}

  def is_kernel(event):
    thread = threads.get((event["pid"], event.get("tid")), "")
    if devices:
      return event["pid"] in devices and thread.startswith("Stream")
    return thread.startswith("tf_XLA") and not any(s in event["name"] for s in _NOT_KERNELS)

  return [e for e in events if e.get("ph") == "X" and "dur" in e and is_kernel(e)]


def summarise(trace_path: str, top: int = 15, hlo_text: str = "") -> dict:
  """Device time by group and the `top` kernels. With the step's HLO text,
  a kernel's group comes from its HLO op (the event's 'hlo_op'), else from
  its name (`kernel_group`)."""
  with gzip.open(trace_path) as f:
    events = kernel_events(json.load(f))
  ops = hlo_groups(hlo_text) if hlo_text else {}
  by_name = collections.defaultdict(lambda: [0.0, 0, "other"])
  for e in events:
    entry = by_name[e["name"]]
    entry[0] += e["dur"]
    entry[1] += 1
    entry[2] = ops.get(e.get("args", {}).get("hlo_op"), kernel_group(e["name"]))
  total = sum(t for t, _, _ in by_name.values()) or 1.0
  groups = collections.Counter()
  for t, _, group in by_name.values():
    groups[group] += t
  kernels = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]
  return {"trace": trace_path, "kernel_ms": total / 1e3,
          "groups": {g: {"ms": groups[g] / 1e3, "fraction": groups[g] / total}
                     for g in ("matmul", "attention", "elementwise", "other")},
          "top": [{"name": n, "group": g, "ms": t / 1e3, "count": c, "fraction": t / total}
                  for n, (t, c, g) in kernels]}


def table(summary: dict) -> str:
  lines = [f"kernel time {summary['kernel_ms']:.1f} ms in {summary['trace']}", "",
           "| group | ms | share |", "|---|---|---|"]
  lines += [f"| {g} | {v['ms']:.1f} | {100 * v['fraction']:.1f} % |"
            for g, v in summary["groups"].items()]
  lines += ["", "| kernel | group | calls | ms | share |", "|---|---|---|---|---|"]
  lines += [f"| `{k['name'][:90]}` | {k['group']} | {k['count']} | {k['ms']:.2f} | "
            f"{100 * k['fraction']:.1f} % |" for k in summary["top"]]
  return "\n".join(lines)


def main(argv):
  del argv
  if _TRACE.value:
    trace_dir = _TRACE.value
  else:
    if FLAGS.config is None:
      raise app.UsageError("give --config (to profile the train step) or --trace")
    from alip_jax import monitoring
    trace_dir = os.path.join(_OUT.value, "trace")
    result = train_step.run(FLAGS.config, FLAGS.steps, FLAGS.vocab,
                            monitoring.peak_tflops(FLAGS.peak_tflops), trace_dir=trace_dir)
    print(json.dumps(result))
  hlo_path = os.path.join(trace_dir, train_step.HLO_FILE)
  hlo_text = open(hlo_path).read() if os.path.exists(hlo_path) else ""
  summary = summarise(find_trace(trace_dir), _TOP.value, hlo_text)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, "profile_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(table(summary))


if __name__ == "__main__":
  # configs/NAME.py resolves as in alip-train (alip_jax.console).
  app.run(main, argv=console.with_packaged_config(sys.argv))
