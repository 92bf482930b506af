"""Checkpoints: exact save → restore (gates and data position included), and
a run stopped mid-way resumes to the same final state as an unbroken one."""

import json
import os

import jax
import numpy as np

from alip_jax import checkpointing, mesh as mesh_lib, state as state_lib, step as step_lib, train
from alip_jax.data import pipeline, records
from conftest import restore_saved_state, tiny_config


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_save_restore_is_exact(tiny_corpus, tmp_path):
  config = tiny_config()
  mesh = mesh_lib.make_mesh(config.mesh)
  model, tokenizer = state_lib.make_model_and_tokenizer(config, tiny_corpus)
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  files = records.split_files(tiny_corpus, "train").files

  def data_iter():
    return iter(pipeline.train_dataset(files, tokenizer, config.data.image_size, 16, 0,
                                       pipeline.BadRecordCounter(), 0, 1, num_threads=1))

  it = data_iter()
  state = spec.initialise(jax.random.key(0))
  for _ in range(2):
    state, _ = train_step(state, pipeline.to_global_batch(next(it), mesh_lib.batch_sharding(mesh)))
  saved = jax.device_get(state)
  assert saved["gates"]["h_tc"] != 1.0  # the gates moved off their initial value

  manager = checkpointing.make_manager(str(tmp_path / "ckpt"), 2)
  checkpointing.save(manager, 2, state, it)
  manager.wait_until_finished()
  expected_next = next(it)

  fresh_it = data_iter()
  restored = checkpointing.restore_latest(
      checkpointing.make_manager(str(tmp_path / "ckpt"), 2), spec.abstract, fresh_it)
  assert_trees_equal(jax.device_get(restored), saved)
  assert restored["params"]["logit_scale"].sharding.is_equivalent_to(
      mesh_lib.replicated(mesh), 0)
  np.testing.assert_array_equal(next(fresh_it)["key"], expected_next["key"])


def test_interrupted_run_resumes_to_the_same_state(tiny_corpus, tmp_path):
  config = tiny_config()
  config.data.dir = tiny_corpus
  unbroken = train.train_and_evaluate(config, str(tmp_path / "unbroken"))
  # The state each run ended with: its last checkpoint (saved at the end).
  _, unbroken_state = restore_saved_state(str(tmp_path / "unbroken"))

  workdir = str(tmp_path / "interrupted")
  first = train.train_and_evaluate(config, workdir, stop_after=4)
  assert first.step == 4 and first.eval == {} and not first.preempted
  resumed = train.train_and_evaluate(config, workdir)  # same command again
  assert resumed.step == config.train.steps

  assert_trees_equal(restore_saved_state(workdir)[1], unbroken_state)
  assert resumed.eval == unbroken.eval and resumed.gates == unbroken.gates
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert [m["step"] for m in lines] == [2, 4, 6]  # 2 and 4 by the first run, 6 after resuming
  assert lines[-1]["epoch"] == 6 * 16 / 1500  # samples trained on / training records
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]

  # With Grain worker processes: the same batches, so the same final state,
  # and the workers' iterator state resumes in the checkpoint.
  config.data.workers = 2
  workdir = str(tmp_path / "interrupted_with_workers")
  assert train.train_and_evaluate(config, workdir, stop_after=3).step == 3
  train.train_and_evaluate(config, workdir)
  assert_trees_equal(restore_saved_state(workdir)[1], unbroken_state)


def test_retention_keeps_the_newest_and_every_kth(tiny_corpus, tmp_path):
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.train.steps, config.train.checkpoint_every = 7, 1
  config.train.keep_checkpoints, config.train.keep_every = 2, 3
  config.train.async_checkpoints = False  # the synchronous path works too
  train.train_and_evaluate(config, str(tmp_path / "run"))
  kept = sorted(int(d) for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit())
  assert kept == [3, 6, 7]
