"""Preemption: SIGTERM saves and exits cleanly; kill -9 (also during an
async save) loses at most the steps since the last finished checkpoint; in
both cases the resumed run ends bit-identical to an uninterrupted one."""

import os
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import restore_saved_state
from test_end_to_end import ROOT, TINY_FLAGS, main_command, run_main

STEPS = 24
SEED = 29  # picks the steps the signals land at: reproducible


def flags(corpus, *extra):
  return [*TINY_FLAGS, f"--config.data.dir={corpus}", f"--config.train.steps={STEPS}",
          "--config.train.keep_checkpoints=3", *extra]


def start_main(workdir, *overrides):
  return subprocess.Popen(main_command(workdir, *overrides), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def wait_for_logged_steps(workdir, process, count, timeout=300):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= count:
          return
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.05)
  raise TimeoutError(f"{count} steps not logged in {timeout} s")


def final_state(workdir):
  step, state = restore_saved_state(workdir)
  assert step == STEPS, step
  return state


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = run_main(workdir, *flags(tiny_corpus, "--config.train.checkpoint_every=1000"))
  assert result.returncode == 0, result.stderr[-3000:]
  return final_state(workdir)


def assert_bit_identical(state, want):
  assert set(state) == {"step", "params", "opt", "gates", "skips"}
  jax.tree.map(np.testing.assert_array_equal, state, want)


@pytest.mark.slow
def test_sigterm_saves_exits_and_resumes_bit_identical(tiny_corpus, tmp_path, reference):
  workdir = str(tmp_path / "sigterm")
  stop_at = int(np.random.default_rng(SEED).integers(2, STEPS - 4))  # a random step, seeded
  process = start_main(workdir, *flags(tiny_corpus, "--config.train.checkpoint_every=1000"))
  wait_for_logged_steps(workdir, process, stop_at)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert "preempted: saved step" in stderr, (stop_at, stderr[-3000:])
  saved = ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).latest_step()
  assert stop_at <= saved < STEPS, (stop_at, saved)
  resumed = run_main(workdir, *flags(tiny_corpus, "--config.train.checkpoint_every=1000"))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {saved}" in resumed.stderr
  assert_bit_identical(final_state(workdir), reference)


def saves_in_flight(workdir):
  """Steps whose Orbax save has begun and not finished: Orbax writes a step
  into '<step>.orbax-checkpoint-tmp…' and renames it when complete."""
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(n.split(".")[0]) for n in names if ".orbax-checkpoint-tmp" in n)


@pytest.mark.slow
def test_kill_9_during_an_async_save_keeps_a_restorable_checkpoint(tiny_corpus, tmp_path,
                                                                    reference):
  workdir = str(tmp_path / "kill9")
  # A save every step. From a seeded step on: as soon as a save is seen in
  # flight, SIGSTOP the process (all its threads stop at once), check that
  # the save is still unfinished (else let it go on and look again), kill -9.
  run_flags = flags(tiny_corpus, "--config.train.checkpoint_every=1")
  kill_from = int(np.random.default_rng(SEED).integers(3, STEPS - 6))
  process = start_main(workdir, *run_flags)
  wait_for_logged_steps(workdir, process, kill_from)
  deadline = time.time() + 120
  while True:
    assert process.poll() is None and time.time() < deadline, "no save seen in flight"
    if saves_in_flight(workdir):
      process.send_signal(signal.SIGSTOP)
      if in_flight := saves_in_flight(workdir):
        break
      process.send_signal(signal.SIGCONT)
    time.sleep(0.002)
  process.kill()
  process.communicate(timeout=60)
  assert saves_in_flight(workdir) == in_flight  # the kill left them unfinished
  finished = ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).latest_step()
  assert finished is not None and finished < in_flight[-1] < STEPS, (finished, in_flight)
  resumed = run_main(workdir, *run_flags)
  assert resumed.returncode == 0, (kill_from, resumed.stderr[-3000:])
  assert f"resumed from step {finished}" in resumed.stderr, (finished, resumed.stderr[-3000:])
  assert_bit_identical(final_state(workdir), reference)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tiny_corpus, tmp_path):
  """Multi-host: JAX's preemption sync tells every process; they agree on a
  step, save it together, exit 0, and the next run resumes from it."""
  from test_multihost import run_two_processes, start_two_processes
  workdir = str(tmp_path / "two")
  run_flags = flags(tiny_corpus, "--config.train.checkpoint_every=1000", "--config.mesh.data=2",
                    "--config.mesh.fsdp=4")
  processes = start_two_processes(workdir, *run_flags)
  wait_for_logged_steps(workdir, processes[0], 3)
  processes[1].send_signal(signal.SIGTERM)  # one host's maintenance event
  outputs = [p.communicate(timeout=300)[1] for p in processes]
  for p, err in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  stops = [int(err.split("preempted: saved step ")[1].split()[0]) for err in outputs]
  assert stops[0] == stops[1] < STEPS, outputs[0][-3000:]
  assert ocp.CheckpointManager(os.path.join(workdir, "checkpoints")).latest_step() == stops[0]
  resumed = run_two_processes(workdir, *run_flags)
  assert all(f"resumed from step {stops[0]}" in err for err in resumed)
  assert restore_saved_state(workdir)[0] == STEPS
