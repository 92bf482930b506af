"""The TPU path, without a TPU: the trainer's step compiled ahead of time for
a small TPU slice (libtpu's compile-only topology), next to the same step on
the 8 CPU test devices."""

import re

import jax
import numpy as np
import pytest

pytest.importorskip("libtpu", reason="libtpu is not installed (the [test] extra "
                    "installs it on Linux x86_64 only)")

from alip_jax import accelerators, mesh as mesh_lib  # noqa: E402
from alip_jax.benchmarks import tpu_compile  # noqa: E402
from conftest import tiny_config  # noqa: E402

VOCAB = 64
TOPOLOGY = "v5e:2x4"  # 8 chips, one host
MESH = dict(data=2, fsdp=2, model=2)


def ring_config():
  """Every rule of the logical-rules table in play, and the ring loss."""
  config = tiny_config()
  config.loss.chunked = "on"
  config.mesh.update(MESH)
  return config


@pytest.fixture(scope="module")
def tpu_step():
  lowered, mesh = tpu_compile.lower_train_step(
      ring_config(), tpu_compile.topology_devices(TOPOLOGY), VOCAB)
  return lowered.compile(), mesh


def test_small_slice_compiles_and_is_measured(tpu_step):
  compiled, mesh = tpu_step
  assert {d.device_kind for d in mesh.devices.flat} == {"TPU v5 lite"}
  chip, chips = tpu_compile.parse_topology(TOPOLOGY)
  assert (chip, chips) == (accelerators.TPU_CHIPS["v5e"], 8)
  report = {**tpu_compile.describe(ring_config(), TOPOLOGY),
            **tpu_compile.measure(compiled, ring_config(), chip, chips)}
  report.update(tpu_compile.estimate(report))
  # The donated state comes back in place; the tiny model is far under 16 GiB.
  assert 0 < report["argument_gib"] and 0 < report["alias_gib"] <= report["output_gib"]
  assert 0 < report["total_gib"] < 0.1 * report["hbm_gib"] and report["fits"]
  assert report["xla_tflop_per_chip"] > 0 and report["est_step_s"] > 0
  assert 0 < report["est_mfu"] <= 1 and report["ring_loss"]
  # FSDP gathers weights, gradients are reduced over the batch axes.
  assert report["collectives"]["all-gather"] > 0 and report["collectives"]["all-reduce"] > 0


def _specs(shardings):
  """PartitionSpecs without trailing Nones (a compiler may drop them)."""
  def spec(s):
    dims = list(s.spec)
    while dims and dims[-1] is None:
      dims.pop()
    return tuple(dims)
  return jax.tree.map(spec, shardings)


def test_tpu_and_cpu_compiles_keep_the_logical_rules_shardings(tpu_step):
  tpu_compiled, tpu_mesh = tpu_step
  lowered, cpu_mesh = tpu_compile.lower_train_step(ring_config(), jax.devices(), VOCAB)
  cpu_compiled = lowered.compile()
  assert dict(tpu_mesh.shape) == dict(cpu_mesh.shape) == MESH
  assert _specs(tpu_compiled.input_shardings) == _specs(cpu_compiled.input_shardings)
  assert _specs(tpu_compiled.output_shardings) == _specs(cpu_compiled.output_shardings)
  # ... and they are what the rules table asks for: FSDP × tensor-parallel
  # weights, Adam moments like them, a batch split over data × fsdp.
  (state, batch), _ = _specs(tpu_compiled.input_shardings)
  block = state["params"]["image"]["encoder"]["block00"]
  assert block["mlp"]["fc"]["kernel"] == ("fsdp", "model")
  assert block["attn"]["out"]["kernel"] == ("model", None, "fsdp")
  assert state["opt"][1][0].mu["image"]["encoder"]["block00"]["mlp"]["fc"]["kernel"] == \
      ("fsdp", "model")
  assert batch["image"] == (mesh_lib.BATCH_AXES,) and state["step"] == ()


def _permute_pairs(hlo_text):
  return [frozenset(tuple(int(x) for x in pair.split(","))
                    for pair in re.findall(r"\{(\d+,\d+)\}", pairs))
          for pairs in re.findall(r"collective-permute(?:-start)?\([^\n]*?"
                                  r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}", hlo_text)]


def test_ring_loss_sends_text_blocks_round_the_batch_ring(tpu_step):
  compiled, mesh = tpu_step
  # Device (d, f, m) of the mesh is partition d·F·M + f·M + m; the ring runs
  # over the flattened batch axes (d, f), once per 'model' index.
  ids = np.arange(mesh.devices.size).reshape(mesh.devices.shape)
  ring = ids.reshape(-1, mesh.shape["model"])
  size = ring.shape[0]
  forward = frozenset((int(ring[r, m]), int(ring[(r - 1) % size, m]))
                      for r in range(size) for m in range(ring.shape[1]))
  backward = frozenset((b, a) for a, b in forward)
  pairs = _permute_pairs(compiled.as_text())
  assert forward in pairs, "the forward ring's collective-permute is missing"
  assert backward in pairs, "the backward pass's reverse ring is missing"
