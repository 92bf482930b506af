"""A run directory is never damaged or misread: the resume contract, a
damaged newest checkpoint, a failed save, a diverging run; and the
evaluation CLI's checkpoint choices."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import alip_jax
from alip_jax import checkpointing, rundir, state as state_lib, train
from conftest import restore_saved_state, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_for(corpus):
  config = tiny_config()
  config.data.dir = corpus
  return config


@pytest.fixture(scope="module")
def stopped_run(tiny_corpus, tmp_path_factory):
  """6-step config stopped after step 4: checkpoints 3 and 4."""
  workdir = str(tmp_path_factory.mktemp("stopped") / "run")
  train.train_and_evaluate(config_for(tiny_corpus), workdir, stop_after=4)
  assert rundir.saved_steps(workdir) == [3, 4]
  return workdir


def copy_of(workdir, tmp_path, name="run"):
  target = str(tmp_path / name)
  shutil.copytree(workdir, target)
  return target


def tree_digest(directory):
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(directory)):
    dirs.sort()
    for f in sorted(files):
      digest.update(f.encode())
      with open(os.path.join(root, f), "rb") as fh:
        digest.update(fh.read())
  return digest.hexdigest()


def truncate_data_files(step_dir):
  """Truncates the array data files of a step to half (as a save cut short
  would leave them); returns one of them."""
  data = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  files = [os.path.join(data, f) for f in os.listdir(data)]
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  return files[0]


# ---------------------------------------------------------------- the resume contract

def test_resume_with_another_model_is_refused_before_anything_is_written(
    stopped_run, tiny_corpus, tmp_path):
  workdir = copy_of(stopped_run, tmp_path)
  before = tree_digest(workdir)
  config = config_for(tiny_corpus)
  config.model.text.width, config.loss.name = 48, "clip"
  config.train.steps = 8  # allowed alone; listed with the others it is not
  with pytest.raises(rundir.RunConfigMismatch) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert "model.text.width: 32 → 48" in message and "loss.name: 'alip' → 'clip'" in message
  assert "train.steps" not in message
  assert "new --workdir" in message and f"--config.init_from=workdir:{workdir}" in message
  assert tree_digest(workdir) == before  # nothing written: config.json still the run's
  alip_jax.load(workdir)  # the run's own checkpoints still load


def test_a_workdir_without_its_config_json_is_not_written_before_the_shape_check(
    stopped_run, tiny_corpus, tmp_path):
  """config.json lost (or not copied): nothing to compare a resume with, so
  the saved shapes are the check, and nothing is written before it."""
  workdir = copy_of(stopped_run, tmp_path)
  os.remove(os.path.join(workdir, "config.json"))
  before = tree_digest(workdir)
  config = config_for(tiny_corpus)
  config.model.text.width = 48
  with pytest.raises(checkpointing.StateShapeMismatch, match="saved by another model"):
    train.train_and_evaluate(config, workdir)
  assert tree_digest(workdir) == before  # no config.json of the refused model
  assert not os.path.exists(os.path.join(workdir, "config.json"))


def test_readers_work_while_a_trainer_holds_the_workdir(stopped_run, tiny_corpus):
  """alip_jax.load (under evaluate and export) never takes the writer lease."""
  from alip_jax.checkpointing import lease
  with lease.Lease(stopped_run, "train"):
    assert alip_jax.load(stopped_run).step == 4
    with pytest.raises(lease.LeaseHeld, match="in use by another writer"):
      train.train_and_evaluate(config_for(tiny_corpus), stopped_run)


def test_a_batch_the_mesh_cannot_split_writes_nothing(tiny_corpus, tmp_path):
  config = config_for(tiny_corpus)
  config.train.batch_size = 12  # 8 devices
  with pytest.raises(ValueError, match="batch"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_allowed_changes_are_logged_and_the_old_config_kept(stopped_run, tiny_corpus, tmp_path,
                                                             caplog):
  workdir = copy_of(stopped_run, tmp_path)
  with open(os.path.join(workdir, "config.json")) as f:
    old = f.read()
  config = config_for(tiny_corpus)
  config.train.steps, config.eval.batch_size, config.model.remat = 9, 16, "full"
  changes = rundir.check_resume(config, workdir, [3, 4])
  assert [c[0] for c in changes] == ["eval.batch_size", "model.remat", "train.steps"]
  with caplog.at_level(logging.INFO):
    rundir.record(config, workdir, changes, [3, 4])
    rundir.record(config, workdir, changes, [3, 4])  # a second resume at the same step
  assert "train.steps: 6 → 9" in caplog.text
  with open(os.path.join(workdir, "config.4.json")) as f:
    assert f.read() == old
  assert os.path.exists(os.path.join(workdir, "config.4.1.json"))
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["steps"] == 9
  # No checkpoint yet: any change is allowed (nothing saved can be misread).
  config.model.text.width = 48
  assert rundir.check_resume(config, workdir, [])


def test_a_changed_tokenizer_is_refused(stopped_run, tiny_corpus, tmp_path):
  workdir = copy_of(stopped_run, tmp_path)
  other = str(tmp_path / "tokenizer.model")
  with open(os.path.join(workdir, "tokenizer.model"), "rb") as f:
    data = f.read()
  with open(other, "wb") as f:
    f.write(data[:-1] + bytes([data[-1] ^ 1]))
  with pytest.raises(rundir.RunConfigMismatch, match="other words"):
    rundir.check_tokenizer(workdir, other, [3, 4])
  rundir.check_tokenizer(workdir, os.path.join(tiny_corpus, "tokenizer.model"), [3, 4])


def test_shape_mismatch_names_the_parameter(stopped_run, tmp_path):
  """A config.json edited by hand (the contract cannot see that): the
  restore names the parameter, and never suggests strict=False."""
  workdir = copy_of(stopped_run, tmp_path)
  path = os.path.join(workdir, "config.json")
  config = json.load(open(path))
  config["model"]["embed_dim"] = 48
  json.dump(config, open(path, "w"))
  with pytest.raises(checkpointing.StateShapeMismatch) as error:
    alip_jax.load(workdir)
  assert "params/text/proj/kernel: (32, 32) in the checkpoint, (32, 48) in this config" in str(
      error.value)
  assert "strict" not in str(error.value)


# ---------------------------------------------------------------- damaged checkpoints

@pytest.mark.slow
def test_truncated_newest_checkpoint_falls_back_bit_identically(stopped_run, tiny_corpus,
                                                                tmp_path, caplog):
  workdir = copy_of(stopped_run, tmp_path, "damaged")
  truncated = truncate_data_files(os.path.join(workdir, "checkpoints", "4"))

  # alip_jax.load: the same fallback, read-only (step 4 left in place).
  with caplog.at_level(logging.WARNING):
    loaded = alip_jax.load(workdir)
  assert loaded.step == 3
  report = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
  assert report == [report[0]] and report[0].startswith("checkpoint step 4 does not read: ")
  assert "/checkpoints/4/state" in report[0] and "Error" in report[0]
  assert "newer step(s) [4] do not read and were skipped (left in place)" in caplog.text
  assert os.path.exists(truncated)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint step 99; the steps there are \[3, 4\]"):
    alip_jax.load(workdir, step=99)
  with pytest.raises(checkpointing.NoReadableCheckpoint, match="step 4 does not read"):
    alip_jax.load(workdir, step=4)

  # Training: resumes from 3, ends bit-identical to a run stopped at 3.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config_for(tiny_corpus), workdir)
  assert "restored step 3: newer step(s) [4] do not read" in caplog.text
  assert os.path.exists(os.path.join(workdir, "checkpoints", "4.unreadable"))
  reference = str(tmp_path / "stopped_at_3")
  train.train_and_evaluate(config_for(tiny_corpus), reference, stop_after=3)
  train.train_and_evaluate(config_for(tiny_corpus), reference)
  jax.tree.map(np.testing.assert_array_equal, restore_saved_state(workdir)[1],
               restore_saved_state(reference)[1])

  config = config_for(tiny_corpus)
  config.train.restore_fallback = False
  again = copy_of(stopped_run, tmp_path, "no_fallback")
  truncate_data_files(os.path.join(again, "checkpoints", "4"))
  with pytest.raises(checkpointing.NoReadableCheckpoint, match=r"Other steps: \[3\]"):
    train.train_and_evaluate(config, again)


# ---------------------------------------------------------------- failed saves, divergence

FILE_LIMIT_RUN = textwrap.dedent("""
    import resource, signal, sys
    sys.path[:0] = ["tests", "."]
    import conftest
    from alip_jax import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, resource.RLIM_INFINITY))
    sys.argv = ["alip-train", "--config", "configs/demo.py", "--workdir", sys.argv[2],
                *conftest.tiny_flags(), f"--config.data.dir={sys.argv[1]}",
                "--config.train.steps=8", "--config.train.checkpoint_every=1",
                "--config.train.log_every=1"]
    main.run()
""")


@pytest.mark.slow
def test_failed_async_save_stops_at_the_next_step(stopped_run, tiny_corpus, tmp_path):
  workdir = copy_of(stopped_run, tmp_path)
  saved = {s: tree_digest(os.path.join(workdir, "checkpoints", str(s))) for s in (3, 4)}
  run = subprocess.run([sys.executable, "-c", FILE_LIMIT_RUN, tiny_corpus, workdir], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 1
  last = run.stderr.strip().splitlines()[-1]  # the last thing printed, as one line
  assert last.startswith("error: the checkpoint save of step 5 failed"), run.stderr[-3000:]
  assert "Checkpoints already saved are untouched: steps [3, 4]" in last
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line)["step"] for line in f][-1]
  assert last <= 6  # stopped at the next boundary (or, at the latest, the next save)
  assert {s: tree_digest(os.path.join(workdir, "checkpoints", str(s))) for s in (3, 4)} == saved
  assert rundir.saved_steps(workdir) == [3, 4]


@pytest.mark.slow
def test_divergence_names_a_checkpoint_from_before_it(stopped_run, tiny_corpus, tmp_path):
  """lr = 1e30 from step 5 on: step 5's loss is finite but its update ruins
  the params, so step 6 is the first non-finite one and checkpoint 5 (finite,
  but ruined) must not be named; 4 is."""
  workdir = copy_of(stopped_run, tmp_path)
  config = config_for(tiny_corpus)
  config.optim.lr = 1e30
  config.train.steps, config.train.log_every, config.train.checkpoint_every = 12, 1, 1
  config.train.max_consecutive_skips = 2
  with pytest.raises(FloatingPointError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert "up to step 7" in message and "params computed by step 5 already failed" in message
  assert "the last good checkpoint is step 4" in message
  # Saves stopped with the first non-finite step: 5 is the last one written.
  assert rundir.saved_steps(workdir)[-1] == 5


# ---------------------------------------------------------------- evaluation CLI

def test_load_of_a_workdir_without_checkpoints_creates_nothing(stopped_run, tmp_path):
  workdir = str(tmp_path / "empty")
  os.makedirs(workdir)
  for name in ("config.json", "tokenizer.model"):
    shutil.copy(os.path.join(stopped_run, name), workdir)
  with pytest.raises(FileNotFoundError, match="holds no finished checkpoint"):
    alip_jax.load(workdir)
  assert sorted(os.listdir(workdir)) == ["config.json", "tokenizer.model"]


@pytest.mark.slow
def test_evaluate_cli_on_a_checkpoint_step_and_a_missing_step(stopped_run, tmp_path):
  workdir = copy_of(stopped_run, tmp_path)
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.evaluate", "--checkpoint",
       os.path.join(workdir, "checkpoints", "3"), "--batch_size", "16"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]  # retrieval data from the workdir's config
  assert json.load(open(os.path.join(workdir, "eval", "3.json")))["retrieval"]["num_images"] == 200
  run = subprocess.run([sys.executable, "-m", "alip_jax.evaluate", "--workdir", workdir,
                        "--step", "99"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 1
  assert "no checkpoint step 99; the steps there are [3, 4]" in run.stderr.strip().splitlines()[-1]


def test_init_from_workdir_starts_from_its_weights_and_tokenizer(stopped_run, tiny_corpus):
  config = config_for(tiny_corpus)
  config.init_from = f"workdir:{stopped_run}"
  assert rundir.tokenizer_file(config, tiny_corpus) == os.path.join(stopped_run,
                                                                      "tokenizer.model")
  model, _ = state_lib.make_model_and_tokenizer(config, tiny_corpus)
  import flax.linen as nn
  fresh = jax.device_get(nn.unbox(state_lib.init_params(model, config, jax.random.key(1))))
  imported = state_lib.imported_params(config, fresh)
  jax.tree.map(np.testing.assert_array_equal, imported,
               jax.device_get(alip_jax.load(stopped_run).params))
