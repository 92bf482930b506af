"""A workdir in a bucket (gs://), as on TPU VM pods: every file the trainer
writes itself goes through etils.epath, tested on an in-memory fake of GCS
registered as fsspec's 'gs' protocol. Checkpoints are Orbax's (which writes
gs:// through tensorstore, unreachable here): they go to a local directory.
Also: optional W&B logging, through a stand-in `wandb` module."""

import json
import sys
import types

import jax
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

import alip_jax
from alip_jax import checkpointing, fileio, rundir, train
from alip_jax.tools import synthetic
from conftest import tensorboard_tags, tiny_config


class FakeGCS(MemoryFileSystem):
  protocol = ("gs", "gcs")
  store = {}  # its own, not MemoryFileSystem's
  pseudo_dirs = [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):
    del finalize_on_close  # what epath passes to gcsfs
    super().__init__(*args, **kwargs)


class FakeWandb(types.ModuleType):
  """Records what the Monitor asks of `wandb`."""

  def __init__(self):
    super().__init__("wandb")
    self.inits, self.logged, self.finished = [], [], 0
    self.Histogram = lambda values: ("histogram", len(values))

  def init(self, **kwargs):
    self.inits.append(kwargs)
    fake = self
    return types.SimpleNamespace(log=lambda data, step: fake.logged.append((step, data)),
                                 finish=lambda: setattr(fake, "finished", fake.finished + 1))


@pytest.fixture
def bucket(monkeypatch, tmp_path):
  FakeGCS.store.clear()
  registry = sys.modules["fsspec.registry"]._registry
  for protocol in FakeGCS.protocol:
    monkeypatch.setitem(registry, protocol, FakeGCS)  # taken out again after the test
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches filesystems
  local_checkpoints = tmp_path / "checkpoints"
  monkeypatch.setattr(rundir, "checkpoint_dir",
                      lambda workdir: str(local_checkpoints / workdir.replace("gs://", "")))
  yield FakeGCS.store
  FakeGCS.store.clear()
  epath.backend.fsspec_backend._get_filesystem.cache_clear()


def test_fileio_on_a_bucket(bucket):
  fileio.makedirs("gs://b/run")
  fileio.write_json("gs://b/run/x.json", {"a": 1})
  assert fileio.read_json("gs://b/run/x.json") == {"a": 1} and not fileio.exists("gs://b/run/y")
  log = fileio.open_for_append("gs://b/run/m.jsonl", flush_seconds=3600)
  log.write(b"1\n")
  log.flush()  # the first flush writes
  log.write(b"2\n")
  log.flush()  # then at most one an hour
  assert epath.Path("gs://b/run/m.jsonl").read_text() == "1\n"
  log.close()
  log = fileio.open_for_append("gs://b/run/m.jsonl")  # a restart keeps what is there
  log.write(b"3\n")
  log.close()
  assert epath.Path("gs://b/run/m.jsonl").read_text() == "1\n2\n3\n"


@pytest.mark.slow
def test_training_in_a_bucket_workdir_resumes_and_loads(bucket, tiny_corpus, monkeypatch):
  wandb = FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", wandb)
  workdir = "gs://bucket/runs/alip"
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.train.steps, config.train.checkpoint_every = 4, 2
  config.train.profile_steps = "1,2"
  config.wandb.project = "alip-test"
  first = train.train_and_evaluate(config, workdir, stop_after=2)
  assert first.step == 2
  second = train.train_and_evaluate(config, workdir)
  assert second.step == 4

  files = {key.removeprefix("gs://bucket/runs/alip/"): key for key in bucket}
  assert {"config.json", "eval.json", "metrics.jsonl", "tokenizer.model",
          "wandb_run.json"} <= set(files)
  assert json.loads(bucket[files["config.json"]].getvalue())["train"]["steps"] == 4
  metrics = [json.loads(line) for line in bucket[files["metrics.jsonl"]].getvalue().splitlines()]
  assert [m["step"] for m in metrics] == [2, 4]  # the resumed run appended
  assert "i2t_R@1" in json.loads(bucket[files["eval.json"]].getvalue())["4"]
  events = [bucket[k].getvalue() for name, k in files.items() if name.startswith("tensorboard/")]
  tags = tensorboard_tags(events)
  assert {"train/loss", "eval/i2t_R_1"} <= tags["scalar"]
  assert "gates/hist_weight_sample" in tags["histogram"]
  assert any(name.startswith("profile/") and name.endswith(".xplane.pb") for name in files)

  # W&B: one run id, continued after the resume; scalars, histograms, eval.
  run_id = wandb.inits[0]["id"]
  assert len(run_id) == 8 and wandb.inits[1]["id"] == run_id
  assert wandb.inits[1]["resume"] == "allow" and wandb.inits[0]["project"] == "alip-test"
  assert [step for step, _ in wandb.logged] == [2, 4, 4] and wandb.finished == 2
  assert wandb.logged[1][1]["gates/hist_weight_sample"] == ("histogram", 16)
  assert "eval/i2t_R@1" in wandb.logged[2][1]

  # alip_jax.load reads the bucket workdir (the tokenizer comes down to a temp file).
  loaded = alip_jax.load(workdir)
  assert loaded.step == 4
  # The params the run ended with, as its last checkpoint holds them.
  import orbax.checkpoint as ocp
  path = f"{rundir.checkpoint_dir(workdir)}/4/state"
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  saved = checkpointer.restore(path, jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      checkpointer.metadata(path).item_metadata))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.params),
               jax.device_get(saved["params"]))
  assert loaded.encode_text(["a red circle"]).shape == (1, 32)


def test_data_in_a_bucket_is_a_clear_error(bucket):
  config = tiny_config()
  config.data.dir = "gs://bucket/data"
  with pytest.raises(ValueError, match="gcsfuse"):
    synthetic.prepare(config, "gs://bucket/run")
