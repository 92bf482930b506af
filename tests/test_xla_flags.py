"""benchmarks.xla_flags: variants parsed, each run in its own process, a
failing flag is a row with its error, the rest still measured."""

import json
import os
import subprocess
import sys

import pytest

from alip_jax.benchmarks import xla_flags
from test_end_to_end import ROOT


def test_parse_variant_splits_xla_flags_from_train_step_arguments():
  assert xla_flags.parse_variant("baseline=") == ("baseline", [], [])
  assert xla_flags.parse_variant(
      "both=--xla_gpu_enable_cublaslt=true --config.model.attention=cudnn:64") == (
          "both", ["--xla_gpu_enable_cublaslt=true"], ["--config.model.attention=cudnn:64"])
  for text in xla_flags.GPU_VARIANTS + xla_flags.SMOKE_VARIANTS:
    xla_flags.parse_variant(text)
  with pytest.raises(ValueError, match="name=ARGS"):
    xla_flags.parse_variant("--xla_gpu_enable_cublaslt=true")


@pytest.mark.slow
def test_flag_ab_runs_each_variant_in_its_own_process(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.benchmarks.xla_flags", "--config=configs/demo.py",
       "--smoke", "--steps=1", f"--out={tmp_path}", "--variant=baseline=",
       "--variant=unknown=--xla_no_such_flag=1"],
      cwd=ROOT, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = [json.loads(line) for line in open(tmp_path / "xla_flags.jsonl")]
  assert [r["variant"] for r in rows] == ["baseline", "unknown"]
  assert rows[0]["samples_per_s"] > 0 and rows[0]["batch"] == 8
  assert "xla_no_such_flag" in rows[1]["error"]
  assert "| baseline |" in run.stdout and "| unknown | failed:" in run.stdout
