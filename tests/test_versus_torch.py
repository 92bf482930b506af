"""`python -m alip_jax.benchmarks.versus_torch --smoke`: both sides run (tiny
towers, CPU, open_clip from the torch venv), every case in its own process,
results.jsonl and the table come out. Speed is not checked."""

import json
import os
import subprocess
import sys

import pytest

from alip_jax import monitoring
from alip_jax.benchmarks import versus_torch
from test_end_to_end import ROOT

TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")
pytestmark = pytest.mark.skipif(
    not TORCH_PYTHON and os.environ.get("ALIP_SKIP_TORCH") == "1",
    reason="ALIP_SKIP_TORCH=1 and no ALIP_TORCH_PYTHON")


@pytest.mark.slow
def test_versus_torch_smoke_runs_both_sides(tmp_path):
  if not TORCH_PYTHON:
    pytest.fail("ALIP_TORCH_PYTHON is not set: run the tests through tests/run.sh, which makes "
                "the torch venv, or set ALIP_SKIP_TORCH=1")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device is enough
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.benchmarks.versus_torch", "--smoke", f"--out={tmp_path}",
       f"--torch_python={TORCH_PYTHON}"],
      cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
  assert [(r["framework"], r["workload"]) for r in rows] == [
      ("jax", "-"), ("alip_jax", "pairs"), ("open_clip eager", "pairs"),
      ("alip_jax", "triplets"), ("open_clip eager", "triplets")]
  assert not [r for r in rows if "error" in r], rows
  assert rows[0]["matmul_tflops"] > 0
  for row in rows[1:]:
    config = versus_torch.workload_config(row["workload"], True, "B/16", row["batch"], "")
    assert row["gflop_per_sample"] == pytest.approx(monitoring.flops_per_sample(config) / 1e9)
    assert row["samples_per_s"] > 0 and 0 < row["mfu"] < 1 and row["of_measured_matmul"] > 0
  # Triplets embed two texts: the same model costs more per sample than pairs.
  assert rows[3]["gflop_per_sample"] > rows[1]["gflop_per_sample"]
  assert rows[2]["open_clip"] and rows[2]["torch"]
  assert "| pairs | open_clip eager |" in run.stdout and "without ALIP's gates" in run.stdout
