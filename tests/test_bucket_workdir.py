"""A workdir in a bucket (gs://), as on TPU VM pods, on an in-memory fake of
GCS (tests/fake_gcs.py) that both ways in reach: every file the trainer
writes itself goes through etils.epath (fsspec's 'gs' protocol), and Orbax
writes and restores its checkpoints through TensorStore's GCS driver (a local
server of GCS's JSON API) and epath, into the same fake bucket.
Also: optional W&B logging, through a stand-in `wandb` module."""

import json
import sys
import types

import jax
import numpy as np
import pytest
from etils import epath
from orbax.checkpoint._src.path import gcs_utils

import alip_jax
from alip_jax import checkpointing, fileio, rundir, train
from alip_jax.tools import synthetic
from conftest import tensorboard_tags, tiny_config
from fake_gcs import FakeGCS, serve


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


@pytest.fixture(scope="module")
def json_api():
  """The fake bucket's JSON API server, and TensorStore pointed at it."""
  server = serve()
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("TENSORSTORE_GCS_HTTP_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield server
  server.shutdown()


@pytest.fixture
def bucket(monkeypatch, json_api):
  FakeGCS.store.clear()
  registry = sys.modules["fsspec.registry"]._registry
  for protocol in FakeGCS.protocol:
    monkeypatch.setitem(registry, protocol, FakeGCS)  # taken out again after the test
  epath.backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches filesystems
  # A flat bucket: Orbax asks google-cloud-storage (the [cloud] extra,
  # not in the test environment) whether it has a hierarchical namespace.
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
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


def test_orbax_checkpoints_round_trip_through_the_bucket(bucket):
  """The trainer's save and restore (state and Grain iterator position) on a
  gs:// directory: the objects land in the bucket, and a fresh manager finds
  the step there and restores both."""
  import grain
  directory = rundir.checkpoint_dir("gs://bucket/runs/small")
  state = {"params": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(7)}
  data_iter = iter(grain.MapDataset.range(10).to_iter_dataset())
  next(data_iter), next(data_iter)
  manager = checkpointing.make_manager(directory, max_to_keep=2)
  checkpointing.save(manager, 7, state, data_iter)
  manager.wait_until_finished()
  assert {"bucket/runs/small/checkpoints/7/state/manifest.ocdbt",
          "bucket/runs/small/checkpoints/7/commit_success.txt"} <= set(bucket)
  fresh = checkpointing.make_manager(directory, max_to_keep=2)
  assert fresh.latest_step() == 7
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)
  restored_iter = iter(grain.MapDataset.range(10).to_iter_dataset())
  restored = checkpointing.restore_latest(fresh, abstract, restored_iter)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), state)
  assert next(restored_iter) == 2  # the saved position, not the start


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

  files = {key.removeprefix("bucket/runs/alip/"): key for key in bucket}
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
  # Orbax's checkpoints are in the bucket (state arrays in OCDBT files,
  # written by TensorStore), at steps 2 and 4; the second run resumed from 2.
  for step in (2, 4):
    assert {f"checkpoints/{step}/commit_success.txt", f"checkpoints/{step}/state/manifest.ocdbt",
            f"checkpoints/{step}/state/_METADATA"} <= set(files)
    assert any(name.startswith(f"checkpoints/{step}/state/d/") for name in files)
    assert any(name.startswith(f"checkpoints/{step}/data_iter/") for name in files)
  assert rundir.checkpoint_dir(workdir) == "gs://bucket/runs/alip/checkpoints"
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
