"""Records/s and peak memory of the dataset builder, Beam against the old
process-pool builder, in one run; with `--runners direct,dask` and
`--filter`, also the builder and the filter on Beam's DaskRunner and peak
RSS per worker process (issue 28's table: docs/DATA.md).

  python -m alip_jax.benchmarks.build [--records 2000,10000] [--per_tar 500]
      [--workers 2] [--extra_captions 0,10] [--old_ref c028507]
  python -m alip_jax.benchmarks.build --records 50000,500000 --extra_captions 0 \
      --old_ref none --runners direct,dask --filter --workers 2

Writes generated img2dataset-style tars (`--per_tar` samples each: a JPEG
photo of `--source_size` pixels, a .txt, a .json) and a captions JSONL with
one caption per sample plus `extra_captions` × records captions for keys
that have no sample (as a captions file for a larger corpus would), to a
temporary directory removed at the end. Each build runs as its own command
with `--workers` processes and `--resize`; measured: wall time (records/s)
and the peak of the summed RSS of the builder's process tree, sampled 20×
per second. The old builder is `alip_jax/data/build.py` at git ref
`--old_ref` (the last commit before the Beam builder), unpacked into a
temporary directory; `--old_ref none` skips it. `--runners dask` runs the
Beam builder on a dask.distributed LocalCluster of `--workers` processes
started here (`--dask_npartitions` = workers); `--filter` then filters each
build (made-up scores, `--top_fraction 0.5`) on the same runner. Per worker:
the largest peak RSS of one worker process (the DirectRunner's children of
the command; the cluster's worker processes). CPU figures from one run are
ratios to compare.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _children(pid: int) -> list[int]:
  try:
    return [int(c) for task in os.listdir(f"/proc/{pid}/task")
            for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
  except (FileNotFoundError, ProcessLookupError, PermissionError):
    return []


def measure(command: list[str], cwd: str | None, env: dict,
            workers: list[int] = ()) -> tuple[float, int, str, int]:
  """(seconds, peak summed RSS in bytes, stdout, largest peak RSS of one
  worker: a child of the command, or one of `workers`) of one command."""
  start, peak, worker_peak = time.time(), 0, {}
  process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  while process.poll() is None:
    peak = max(peak, _tree_rss(process.pid))
    for pid in [*_children(process.pid), *workers]:
      worker_peak[pid] = max(worker_peak.get(pid, 0), _tree_rss(pid))
    time.sleep(0.05)
  stdout, stderr = process.communicate()
  if process.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
  return time.time() - start, peak, stdout, max(worker_peak.values(), default=0)


def write_scores(d: str, records: int) -> str:
  """Made-up scores for `records` records (what the filter reads)."""
  from alip_jax.curation import scoring
  rng = np.random.default_rng(0)
  values = {c: rng.uniform(0, 1, records).astype(np.float32) for c in scoring.COLUMNS[3:]}
  table = {"index": np.arange(records), "key": np.array([f"{i:09d}" for i in range(records)]),
           "noise_kind": np.array(["unknown"] * records), **values}
  os.makedirs(d)
  scoring.write_parquet(table, os.path.join(d, "scores-00000-of-00001.parquet"))
  return d


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
  parser.add_argument("--runners", default="direct", help="direct and/or dask")
  parser.add_argument("--filter", action="store_true", help="also time the filter")
  args = parser.parse_args(argv)
  with contextlib.ExitStack() as stack:
    return _run(args, stack)


def _run(args, stack) -> list[tuple]:
  rows = []
  tmp = stack.enter_context(tempfile.TemporaryDirectory())
  runners = {"direct": (["--direct_num_workers", str(args.workers)], [])}
  if "dask" in args.runners.split(","):
    from dask import distributed
    cluster = stack.enter_context(distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None))
    client = stack.enter_context(distributed.Client(cluster))
    runners["dask"] = (["--runner", "DaskRunner", "--dask_client_address",
                        cluster.scheduler_address, "--dask_npartitions", str(args.workers)],
                       list(client.run(os.getpid).values()))
  # name: (code directory, builder module, flags). The Beam builder is the
  # alip_jax this process imports (None: the command inherits its directory
  # and PYTHONPATH); the old one predates alip_jax/tools/.
  builders = {"beam" if name == "direct" else f"beam-{name}": (None, "alip_jax.tools.build", flags)
              for name, (flags, _) in runners.items() if name in args.runners.split(",")}
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
        workers = runners.get(name.removeprefix("beam-"), ((), []))[1]
        seconds, peak, stdout, worker = measure(command, code, env, workers)
        written = json.loads(stdout.strip().splitlines()[-1])["written"]
        if written != records:
          raise RuntimeError(f"{name} wrote {written} of {records} records")
        rows.append((name, records, records * (1 + extra), seconds, records / seconds, peak,
                     worker))
        print(f"{name:10s} records {records:7d}  captions {records * (1 + extra):8d}  "
              f"{seconds:6.1f} s  {records / seconds:7.1f} records/s  "
              f"peak RSS {peak / 2**20:7.0f} MiB  per worker {worker / 2**20:6.0f} MiB",
              flush=True)
        if args.filter and code is None:
          scores = write_scores(os.path.join(tmp, f"scores-{name}-{records}-{extra}"), records)
          beam_flags = flags if name != "beam" else ["--direct_num_workers", str(args.workers)]
          seconds, peak, stdout, worker = measure(
              [sys.executable, "-m", "alip_jax.filter", f"--scores={scores}", f"--data={out}",
               f"--out={out}-filtered", "--top_fraction=0.5", "--by=w_sample", "--",
               *beam_flags], None, env, workers)
          rows.append((name.replace("beam", "filter"), records, records, seconds,
                       records / seconds, peak, worker))
          print(f"{rows[-1][0]:10s} records {records:7d}  kept {json.loads(stdout)['kept']:10d}  "
                f"{seconds:6.1f} s  {records / seconds:7.1f} records/s  peak RSS "
                f"{peak / 2**20:7.0f} MiB  per worker {worker / 2**20:6.0f} MiB", flush=True)
          subprocess.run(["rm", "-rf", scores, out + "-filtered"])
      for name in builders:  # the inputs of this size are no longer needed
        subprocess.run(["rm", "-rf", os.path.join(tmp, f"out-{name}-{records}-{extra}")])
      subprocess.run(["rm", "-rf", d])
  if "old" in builders and len(builders) == 2 and not args.filter:
    print("\nbeam / old records/s:")
    for (_, records, captions, _, rate, *_), (_, _, _, _, old_rate, *_) in zip(rows[::2], rows[1::2]):
      print(f"  records {records:7d}  captions {captions:8d}  {rate / old_rate:.2f}x")
  return rows


if __name__ == "__main__":
  main()
