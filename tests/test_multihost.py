"""Two local processes × 4 CPU devices (coordinator on 127.0.0.1) train,
checkpoint and resume, and match the one-process 8-device run."""

import os
import socket
import subprocess

import jax
import numpy as np
import pytest

from conftest import restore_saved_state, tensorboard_texts
from test_end_to_end import ROOT, TINY_FLAGS, main_command, run_main


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_two_processes(workdir, *overrides):
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  return [subprocess.Popen(
      main_command(workdir, *overrides, f"--config.distributed.coordinator=127.0.0.1:{port}",
                   "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]


def run_two_processes(workdir, *overrides):
  processes = start_two_processes(workdir, *overrides)
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  return [err for _, err in outputs]


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tiny_corpus, tmp_path):
  # eps 1e-4: see test_train_step.test_same_numbers_on_1_and_8_devices.
  flags = [*TINY_FLAGS, f"--config.data.dir={tiny_corpus}", "--config.optim.eps=1e-4",
           "--config.train.steps=4", "--config.mesh.data=2", "--config.mesh.fsdp=4"]
  one = str(tmp_path / "one_process")
  for steps in ("2", "4"):
    result = run_main(one, *flags[:-3], f"--config.train.steps={steps}", *flags[-2:])
    assert result.returncode == 0, result.stderr[-3000:]
  two = str(tmp_path / "two_processes")
  first = run_two_processes(two, *flags[:-3], "--config.train.steps=2", *flags[-2:])
  assert "process 1 of 2, 4 local of 8 devices" in first[1]
  second = run_two_processes(two, *flags)
  assert all("resumed from step 2" in err for err in second)
  (_, want), (_, got) = restore_saved_state(one, 4), restore_saved_state(two, 4)
  # The same records in each global batch, in another order across hosts:
  # equal up to float summation order.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
  assert int(got["step"]) == 4
  # The down-weighted panel (k = 16 = the whole batch): process 0 names the
  # keys of its half of the batch and only the row numbers of the other half.
  panel = tensorboard_texts(
      open(os.path.join(two, "tensorboard", name), "rb").read()
      for name in os.listdir(os.path.join(two, "tensorboard")))["gates/down_weighted/text_summary"]
  rows = max(panel)[1].splitlines()[2:]  # the last step's
  assert sum("| train-" in row for row in rows) == 8
  assert sum("(another process)" in row for row in rows) == 8
