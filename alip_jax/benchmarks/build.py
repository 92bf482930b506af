"""Records/s and peak memory of the dataset builder, Beam against the old
process-pool builder, in one run.

  python -m alip_jax.benchmarks.build [--records 2000,10000] [--per_tar 500]
      [--workers 2] [--extra_captions 0,10] [--old_ref c028507]

Writes generated img2dataset-style tars (`--per_tar` samples each: a JPEG
photo of `--source_size` pixels, a .txt, a .json) and a captions JSONL with
one caption per sample plus `extra_captions` × records captions for keys
that have no sample (as a captions file for a larger corpus would), to a
temporary directory removed at the end. Each build runs as its own command
with `--workers` processes and `--resize`; measured: wall time (records/s)
and the peak of the summed RSS of the builder's process tree, sampled 20×
per second. The old builder is `alip_jax/data/build.py` at git ref
`--old_ref` (the last commit before the Beam builder), unpacked into a
temporary directory; `--old_ref none` skips it. CPU figures from one run
are ratios to compare.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np



def write_inputs(d: str, records: int, per_tar: int, size: int, extra_captions: int) -> list[str]:
  """Tars of `records` samples and captions.jsonl; returns the tar paths."""
  from PIL import Image
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:size, 0:size] / size
  tars = []
  for start in range(0, records, per_tar):
    path = os.path.join(d, f"{start // per_tar:05d}.tar")
    with tarfile.open(path, "w") as archive:
      for i in range(start, min(start + per_tar, records)):
        pixels = 127 + 80 * np.sin(6 * xx * rng.uniform(0.5, 2) + 3 * yy) + rng.normal(0, 18, (
            size, size))
        buffer = io.BytesIO()
        Image.fromarray(np.stack([pixels] * 3, -1).clip(0, 255).astype(np.uint8)).save(
            buffer, format="JPEG", quality=85)
        for extension, data in (("jpg", buffer.getvalue()), ("txt", f"photo {i} | free".encode()),
                                ("json", json.dumps({"url": f"http://x/{i}"}).encode())):
          info = tarfile.TarInfo(f"{i:09d}.{extension}")
          info.size = len(data)
          archive.addfile(info, io.BytesIO(data))
    tars.append(path)
  with open(os.path.join(d, "captions.jsonl"), "w") as f:
    for i in range(records * (1 + extra_captions)):
      f.write(json.dumps({"key": f"{i:09d}", "caption": f"a picture of waves number {i}"}) + "\n")
  return tars


def _tree_rss(pid: int) -> int:
  """Summed RSS in bytes of `pid` and its descendants."""
  total, stack = 0, [pid]
  while stack:
    p = stack.pop()
    try:
      with open(f"/proc/{p}/status") as f:
        total += next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:")), 0)
      for task in os.listdir(f"/proc/{p}/task"):
        with open(f"/proc/{p}/task/{task}/children") as f:
          stack += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
      continue
  return total


def measure(command: list[str], cwd: str | None, env: dict) -> tuple[float, int, str]:
  """(seconds, peak summed RSS in bytes, stdout) of one command."""
  start, peak = time.time(), 0
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  while process.poll() is None:
    peak = max(peak, _tree_rss(process.pid))
    time.sleep(0.05)
  stdout, stderr = process.communicate()
  if process.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
  return time.time() - start, peak, stdout


def old_builder(ref: str, into: str) -> str:
  """Unpacks alip_jax at `ref` of the git checkout this package is in (git
  finds its root) into `into`; returns that directory."""
  here = os.path.dirname(os.path.abspath(__file__))
  root = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], check=True,
                        capture_output=True, text=True).stdout.strip()
  archive = subprocess.run(["git", "-C", root, "archive", ref, "alip_jax"], check=True,
                           capture_output=True).stdout
  with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(into, filter="data")
  return into


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--records", default="2000,10000")
  parser.add_argument("--per_tar", type=int, default=500)
  parser.add_argument("--source_size", type=int, default=160)
  parser.add_argument("--resize", type=int, default=96)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--num_shards", type=int, default=4)
  parser.add_argument("--extra_captions", default="0,10",
                      help="orphan captions per sample, for the memory-vs-captions rows")
  parser.add_argument("--old_ref", default="c028507", help="git ref of the old builder, or none")
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    # name: (code directory, builder module, flags). The Beam builder is the
    # alip_jax this process imports (None: the command inherits its directory
    # and PYTHONPATH); the old one predates alip_jax/tools/.
    builders = {"beam": (None, "alip_jax.tools.build", ["--direct_num_workers", str(args.workers)])}
    if args.old_ref != "none":
      builders["old"] = (old_builder(args.old_ref, os.path.join(tmp, "old")), "alip_jax.data.build",
                         ["--workers", str(args.workers)])
    for records in map(int, args.records.split(",")):
      for extra in map(int, args.extra_captions.split(",")):
        d = os.path.join(tmp, f"in-{records}-{extra}")
        os.makedirs(d)
        tars = write_inputs(d, records, args.per_tar, args.source_size, extra)
        for name, (code, module, flags) in builders.items():
          out = os.path.join(tmp, f"out-{name}-{records}-{extra}")
          command = [sys.executable, "-m", module, "--out", out,
                     "--captions", os.path.join(d, "captions.jsonl"),
                     "--num_shards", str(args.num_shards), "--resize", str(args.resize),
                     "--vocab_size", "500", *flags]
          for tar in tars:
            command += ["--input", tar]
          env = {**os.environ, **({"PYTHONPATH": code} if code else {})}
          seconds, peak, stdout = measure(command, code, env)
          written = json.loads(stdout.strip().splitlines()[-1])["written"]
          if written != records:
            raise RuntimeError(f"{name} wrote {written} of {records} records")
          rows.append((name, records, records * (1 + extra), seconds, records / seconds, peak))
          print(f"{name:5s} records {records:7d}  captions {records * (1 + extra):8d}  "
                f"{seconds:6.1f} s  {records / seconds:7.1f} records/s  "
                f"peak RSS {peak / 2**20:7.0f} MiB", flush=True)
        for name in builders:  # the inputs of this size are no longer needed
          subprocess.run(["rm", "-rf", os.path.join(tmp, f"out-{name}-{records}-{extra}")])
        subprocess.run(["rm", "-rf", d])
  if "old" in builders:
    print("\nbeam / old records/s:")
    for (_, records, captions, _, rate, _), (_, _, _, _, old_rate, _) in zip(rows[::2], rows[1::2]):
      print(f"  records {records:7d}  captions {captions:8d}  {rate / old_rate:.2f}x")
  return rows


if __name__ == "__main__":
  main()
