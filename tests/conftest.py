"""Test set-up: 8 forced CPU devices (set before jax is imported), and the
fixtures tests share: the tiny corpus, config and run, and the meshes."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most tests train the same tiny towers: a persistent compilation cache (one
# per xdist worker; inherited by the CLI subprocesses) compiles each program
# once per worker instead of once per run. Same executables, same numbers.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache",
    "xla_cache", os.environ.get("PYTEST_XDIST_WORKER", "main")))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# Grain reads absl flags; outside absl.app.run they must be marked parsed.
flags.FLAGS.mark_as_parsed()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Meshes the numerics must not depend on: 1 device, and 8 split data × model.
MESHES = {"1": dict(data=1, model=1), "8x1": dict(data=8, model=1),
          "4x2": dict(data=4, model=2), "2x4": dict(data=2, model=4)}


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs (still run in CI)")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
  """A small embedded corpus, built once per test session."""
  from alip_jax.tools import synthetic
  out = str(tmp_path_factory.mktemp("corpus"))
  synthetic.build(out, synthetic.CorpusConfig(num_train=1500, num_val=50, num_test=200,
                                              shards=3, vocab_size=256))
  return out


def tiny_config(variant="alip"):
  """configs/demo.py shrunk for tests (one place, so tests stay in step)."""
  from configs import demo
  c = demo.get_config(variant)
  c.data.image_size = 32
  c.data.context_length = 32
  c.data.num_threads = 1
  c.data.synthetic = False
  c.model.image.update(patch_size=8, width=32, depth=1, heads=2)
  c.model.text.update(width=32, depth=1, heads=2)
  c.model.embed_dim = 32
  c.train.batch_size = 16
  c.train.steps = 6
  c.train.log_every = 2
  c.train.checkpoint_every = 3
  c.optim.warmup_steps = 2
  c.eval.batch_size = 48  # 200 test items: the last batch is padded
  return c


def config_flags(config, base, prefix="--config") -> list[str]:
  """The command-line overrides (`--config.train.steps=6`) that make `base`
  into `config`."""
  out = []
  for key in config.keys():
    value, was = config[key], base[key]
    if hasattr(value, "keys") and hasattr(was, "keys"):
      out += config_flags(value, was, f"{prefix}.{key}")
    elif value != was:
      out.append(f"{prefix}.{key}={value}")
  return out


def tiny_flags():
  """tiny_config() as overrides of `--config configs/demo.py`, for CLI tests."""
  from configs import demo
  return config_flags(tiny_config(), demo.get_config())


def mesh_of(name):
  """The mesh MESHES[name], over the first device for "1"."""
  from alip_jax import mesh as mesh_lib
  return mesh_lib.make_mesh(MESHES[name], jax.devices()[:1] if name == "1" else jax.devices())


def two_step_run(tiny_corpus, tmp_path_factory, **config_updates):
  """A 2-step run of tiny_config on the tiny corpus, checkpointed at step 2
  and evaluated: (workdir, config, the trainer's result)."""
  from alip_jax import train
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.train.steps, config.train.checkpoint_every = 2, 2
  config.update(config_updates)
  return workdir, config, train.train_and_evaluate(config, workdir)


assert jax.device_count() == 8, "tests need 8 devices: import jax only after conftest"


def restore_saved_state(workdir, step=None):
  """A run's whole saved train state as numpy, onto this process's first
  device, whatever topology saved it (another mesh, other processes)."""
  import orbax.checkpoint as ocp
  directory = os.path.join(workdir, "checkpoints")
  if step is None:
    step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  path = os.path.join(directory, str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata)
  return step, jax.device_get(checkpointer.restore(path, target))


def tensorboard_values(event_files):
  """(step, Summary.Value) of every summary in TensorBoard event files,
  given as bytes (TFRecord framing: length, CRC, proto, CRC)."""
  from tensorboardX.proto import event_pb2
  for data in event_files:
    offset = 0
    while offset < len(data):
      length = int.from_bytes(data[offset:offset + 8], "little")
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        yield event.step, value


def _is_text(value):
  return value.metadata.plugin_data.plugin_name == "text"


def tensorboard_tags(event_files):
  """Tags in TensorBoard event files, by kind: scalar, histogram, text."""
  tags = {"scalar": set(), "histogram": set(), "text": set()}
  for _, value in tensorboard_values(event_files):
    kind = "histogram" if value.HasField("histo") else "text" if _is_text(value) else "scalar"
    tags[kind].add(value.tag)
  return tags


def tensorboard_texts(event_files):
  """{tag: [(step, text), …]} of the text summaries in TensorBoard event files."""
  texts = {}
  for step, value in tensorboard_values(event_files):
    if _is_text(value):
      texts.setdefault(value.tag, []).append(
          (step, b"".join(value.tensor.string_val).decode("utf-8")))
  return texts
