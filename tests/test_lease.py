"""One writer per directory (checkpointing/lease.py): a second writer is
refused naming the holder, locally and in a bucket; a dead holder on this
machine is taken over, a stale one elsewhere only with --break_lease; and two
trainers started together on one workdir leave the checkpoint one clean run
leaves."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alip_jax.checkpointing import lease as lease_lib
from conftest import restore_saved_state
from test_bucket_workdir import bucket, json_api  # noqa: F401  (the fake gs:// fixtures)
from test_end_to_end import ROOT, TINY_FLAGS, main_command, run_main


def holder_file(directory, **fields):
  """Writes a lease as another writer would have left it."""
  content = {"host": "other-host", "boot_id": "x", "pid": 4242, "process_start": None,
             "since": time.time() - 3600, "renewed": time.time(), "purpose": "train",
             "token": "theirs", **fields}
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, lease_lib.LEASE_NAME), "w") as f:
    json.dump(content, f)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
  directory = str(tmp_path / "out")
  with lease_lib.Lease(directory, "score"):
    with pytest.raises(lease_lib.LeaseHeld) as refused:
      lease_lib.Lease(directory, "score").acquire()
    message = str(refused.value)
    assert f"score on host {socket.gethostname()} pid {os.getpid()} since " in message
    assert "\n" not in message and "--out" in message
  # Released on exit: the lease file is gone (and the directory it made,
  # nothing else having been written) and the next writer gets it.
  assert not os.path.exists(directory)
  with lease_lib.Lease(directory, "score"):
    pass


def test_a_refused_writer_leaves_no_directory_it_made(tmp_path):
  """The lease makes the directory; released with nothing else written, it
  removes it again (a run refused by a later check leaves nothing)."""
  directory = str(tmp_path / "new")
  with lease_lib.Lease(directory, "train"):
    assert os.path.exists(os.path.join(directory, lease_lib.LEASE_NAME))
  assert not os.path.exists(directory)


def test_a_dead_holder_on_this_machine_is_taken_over(tmp_path, caplog):
  directory = str(tmp_path / "run")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  holder_file(directory, host=socket.gethostname(), boot_id=lease_lib._boot_id(), pid=dead.pid)
  with lease_lib.Lease(directory, "train") as taken:
    with open(taken.path) as f:
      assert json.load(f)["token"] == taken.token
  assert f"pid {dead.pid} gone from this machine" in caplog.text
  # A live holder on this machine (this test's parent process) is not.
  holder_file(directory, host=socket.gethostname(), boot_id=lease_lib._boot_id(),
              pid=os.getppid(), process_start=lease_lib._process_start(os.getppid()))
  with pytest.raises(lease_lib.LeaseHeld, match=f"pid {os.getppid()}"):
    lease_lib.Lease(directory, "train").acquire()


def test_a_stale_lease_of_another_host_is_broken_only_when_asked(tmp_path, caplog):
  directory = str(tmp_path / "run")
  holder_file(directory, renewed=time.time() - 3600)  # not renewed for an hour
  with pytest.raises(lease_lib.LeaseHeld, match="stale .* re-run with --break_lease"):
    lease_lib.Lease(directory, "train").acquire()
  with lease_lib.Lease(directory, "train", break_stale=True):
    assert "breaking the writer lease of train on host other-host pid 4242" in caplog.text
  # A lease renewed a moment ago is never broken, flag or not.
  holder_file(directory)
  with pytest.raises(lease_lib.LeaseHeld, match="once 300 s pass without renewal"):
    lease_lib.Lease(directory, "train", break_stale=True).acquire()


def test_renewal_keeps_it_fresh_and_notices_a_lost_lease(tmp_path):
  directory = str(tmp_path / "run")
  with lease_lib.Lease(directory, "train", renew_seconds=0.05) as held:
    first = json.load(open(held.path))["renewed"]
    time.sleep(0.3)
    assert json.load(open(held.path))["renewed"] > first and not held.lost
    holder_file(directory, host=socket.gethostname())  # someone broke it
    time.sleep(0.3)
    assert held.lost
  assert json.load(open(held.path))["token"] == "theirs"  # release leaves theirs alone


def test_a_lease_in_a_bucket(bucket):  # noqa: F811
  with lease_lib.Lease("gs://b/run", "train") as held:
    assert "b/run/writer.lease" in bucket
    with pytest.raises(lease_lib.LeaseHeld, match="train on host"):
      lease_lib.Lease("gs://b/run", "train").acquire()
    held.renew()
    assert not held.lost
  assert "b/run/writer.lease" not in bucket
  with lease_lib.Lease("gs://b/run", "train"):
    pass


@pytest.mark.slow
def test_two_trainers_on_one_workdir_one_trains_the_other_is_refused(tiny_corpus, tmp_path):
  """Started together, both reach the lease after their imports; the loser
  is refused then, while the winner still has its whole run ahead."""
  run_flags = [*TINY_FLAGS, f"--config.data.dir={tiny_corpus}", "--config.train.steps=4",
               "--config.train.checkpoint_every=2"]
  workdir = str(tmp_path / "shared")
  processes = [subprocess.Popen(main_command(workdir, *run_flags), cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  codes = sorted(p.returncode for p in processes)
  assert codes == [0, 1], [err[-2000:] for _, err in outputs]
  refused = next(err for p, (_, err) in zip(processes, outputs) if p.returncode)
  winner = next(p for p in processes if p.returncode == 0)
  last = refused.strip().splitlines()[-1]
  assert last.startswith(f"error: {workdir} is in use by another writer: train on host "
                         f"{socket.gethostname()} pid {winner.pid} since "), refused[-2000:]
  assert "Traceback" not in refused and "initialised a new run" not in refused
  # The surviving checkpoint is exactly a single clean run's.
  clean = str(tmp_path / "clean")
  assert run_main(clean, *run_flags).returncode == 0
  for step in (2, 4):
    _, got = restore_saved_state(workdir, step)
    _, want = restore_saved_state(clean, step)
    jax.tree.map(np.testing.assert_array_equal, got, want)
  assert not os.path.exists(os.path.join(workdir, lease_lib.LEASE_NAME))
