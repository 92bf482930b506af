"""The train-step benchmark's FLOP count and its JSON (not its speed)."""

import os
import time

import jax
import ml_collections
import numpy as np
import pytest

from alip_jax import losses, monitoring
from alip_jax.benchmarks import train_step
from alip_jax.models import zoo
from configs import alip_yfcc15m
from conftest import ROOT, tiny_config


@pytest.mark.parametrize("image,gflop", [("B/32", 62.0), ("B/16", 141.0)])
def test_model_flops_match_the_published_counts(image, gflop):
  """docs/conventions: ALIP B/32 62, B/16 141 train GFLOP per triplet
  (3 × (image + 2 × text) forward; image 8.8 / 35.1, text 6.0)."""
  config = alip_yfcc15m.get_config(image)
  flops = zoo.model_flops(config.model, 224, 77)
  assert flops / 1e9 == pytest.approx(gflop, rel=0.015)
  text_only = ml_collections.ConfigDict(dict(image=dict(patch_size=224, width=1, depth=0, heads=1),
                                             text="B", embed_dim=512))
  text_fwd = (zoo.model_flops(text_only, 224, 77, texts_per_sample=1, training=False)
              - 2 * 224 * 224 * 3)  # the 1-wide "patch" of the stub image tower
  assert text_fwd / 1e9 == pytest.approx(6.0, rel=0.01)


def test_benchmark_runs_and_its_flops_agree_with_xla():
  config = tiny_config()
  config.mesh = dict(data=1)
  config.train.batch_size = 8
  start = time.perf_counter()
  with jax.default_device(jax.devices()[0]):
    result = train_step.run(config, steps=2, vocab=64, peak_tflops=1.0,
                            devices=jax.devices()[:1])
  wall_s = time.perf_counter() - start
  assert result["devices"] == 1 and result["batch"] == 8 and result["step_s"] > 0
  # step_s is the median of the 2 timed steps alone: with the compile they
  # fit in the call's wall time (which also holds init and 2 warm-up steps).
  assert result["compile_s"] + 2 * result["step_s"] < wall_s
  assert 0 < result["mfu"] < 1
  # On CPU XLA counts every matmul: the analytic count is within 25 % of it
  # (XLA adds elementwise work, softmax and the loss).
  assert result["model_tflop_per_step"] == pytest.approx(result["xla_tflop_per_step"], rel=0.25)


@pytest.mark.slow
def test_input_pipeline_benchmark_prints_every_figure(tmp_path):
  """Runs end to end on a few generated records (speed is not checked)."""
  import subprocess
  import sys
  from test_end_to_end import ROOT
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.benchmarks.input_pipeline", "--records", "48",
       "--source_size", "64", "--image_size", "32", "--batch", "8", "--seconds", "0.5",
       "--workers", "0,1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  for line in ("bare PIL decode, 1 core:", "pipeline, workers=0:", "pipeline, workers=1:",
               "× bare decode per core", "cores to feed 1468 samples/s"):
    assert line in run.stdout, run.stdout


@pytest.mark.parametrize("name,path,texts,images", [
    ("alip", "both", 2, 1), ("clip", "raw", 1, 1), ("clip", "both", 2, 1), ("siglip", "caption", 1, 1),
    ("mix", "both", 1, 1), ("uniclip", "raw", 1, 2), ("uniclip", "both", 2, 2)])
def test_flops_per_sample_count_the_towers_each_objective_runs(name, path, texts, images):
  """One count for the trainer and the benchmarks: the image tower once per
  view, the text tower once per text the loss embeds."""
  config = alip_yfcc15m.get_config("B/16")
  config.loss.name, config.loss.path = name, path
  image_fwd = zoo.model_flops(config.model, 224, 77, texts_per_sample=0, training=False)
  text_fwd = zoo.model_flops(config.model, 224, 77, texts_per_sample=1, training=False) - image_fwd
  expected = 3 * (images * image_fwd + texts * text_fwd)
  assert monitoring.flops_per_sample(config) == pytest.approx(expected, rel=1e-12)
  if (name, path) == ("clip", "raw"):  # ALIP's count overstated this one by 14.5 %
    alip = alip_yfcc15m.get_config("B/16")
    assert monitoring.flops_per_sample(alip) / monitoring.flops_per_sample(config) == pytest.approx(
        1.145, abs=0.002)


@pytest.mark.parametrize("name,path", [("clip", "raw"), ("uniclip", "raw")])
def test_benchmark_counts_the_objectives_flops(name, path):
  """train_step.py uses the trainer's count: clip/raw one text, UniCLIP two
  views; both still within 25 % of what XLA counts."""
  config = tiny_config()
  config.loss.name, config.loss.path = name, path
  config.mesh = dict(data=1)
  config.train.batch_size = 8
  with jax.default_device(jax.devices()[0]):
    result = train_step.run(config, steps=1, vocab=64, peak_tflops=1.0, compile_only=True,
                            devices=jax.devices()[:1])
  assert result["model_tflop_per_step"] == pytest.approx(
      8 * monitoring.flops_per_sample(config) / 1e12, rel=1e-9)
  assert result["model_tflop_per_step"] == pytest.approx(result["xla_tflop_per_step"], rel=0.25)
def compiled_settings_in_the_docs():
  """(model, topology) → (mesh, remat / scan [/ accum]) of every row of
  docs/BENCHMARKS.md's TPU compile table that fit at batch 4096."""
  rows = {}
  with open(os.path.join(ROOT, "docs", "BENCHMARKS.md")) as f:
    for line in f:
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if (len(cells) == 13 and cells[0].startswith(("v4:", "v5e:", "v5p:")) and cells[3] == "4096"
          and "did not compile" not in cells[8] and "%" in cells[9]):
        rows[cells[1], cells[0]] = (cells[4], cells[6])
  return rows


def test_pod_presets_set_the_checked_mesh_remat_and_scan():
  """Each preset is a setting docs/BENCHMARKS.md shows compiled and fitting
  on that slice (same mesh, remat, scan and GradCache steps)."""
  topologies = {"v5p-128": ("v5p:4x4x4", 64), "v5e-256": ("v5e:16x16", 256),
                "v4-64": ("v4:4x4x2", 32)}
  checked = compiled_settings_in_the_docs()
  for (image, pod), preset in alip_yfcc15m.POD_PRESETS.items():
    config = alip_yfcc15m.get_config(f"{image},{pod}")
    assert config.model.image == image and config.train.batch_size == 4096
    assert dict(config.mesh) == preset["mesh"]
    assert (config.model.remat, config.model.scan) == (preset["remat"], preset["scan"])
    assert config.train.accum_steps == preset.get("accum_steps", 1)
    topology, chips = topologies[pod]
    mesh = {k: v for k, v in config.mesh.items() if k in ("data", "fsdp", "model")}
    free = [k for k, v in mesh.items() if v == -1]
    mesh.update({k: chips // -np.prod(list(mesh.values())) for k in free})  # -1: the rest
    settings = " / ".join([config.model.remat, "scan" if config.model.scan else "no scan"]
                          + ([f"accum {config.train.accum_steps}"]
                             if config.train.accum_steps > 1 else []))
    assert checked.get((image, topology)) == (
        f"{mesh['data']},{mesh['fsdp']},{mesh['model']}", settings), (image, pod)
  with pytest.raises(ValueError, match="no preset for B/16 on v9-8"):
    alip_yfcc15m.get_config("B/16,v9-8")
