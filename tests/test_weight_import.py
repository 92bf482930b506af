"""The weight-import contract (alip_jax/models/weight_checks.py): every
tensor consumed or reported, every parameter filled with its shape, config
and weights agreeing, finite values; OpenAI's TorchScript `.pt` archives;
the tokenizer a fine-tune starts with."""

import json
import logging
import os
import subprocess
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from alip_jax import rundir, state as state_lib
from alip_jax.losses.contrastive import LOGIT_SCALE_INIT
from alip_jax.models import clip_weights, openai_weights, two_towers
from alip_jax.models.weight_checks import WeightImportError
from conftest import tiny_config

TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")
VOCAB, LENGTH, SIZE = 64, 16, 32


def tiny_params():
  cfg = ml_collections.ConfigDict(dict(
      image=dict(patch_size=8, width=32, depth=1, heads=2), text=dict(width=32, depth=1, heads=2),
      embed_dim=32, dtype="float32", remat="none", scan=False, act="gelu", attention="", eot_id=3))
  model = two_towers.from_config(cfg, VOCAB, LENGTH, eot_id=cfg.eot_id,
                                 logit_scale_init=LOGIT_SCALE_INIT)
  params = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3), jnp.uint8),
                      {"raw": jnp.zeros((1, LENGTH), jnp.int32)})["params"]
  return jax.tree.map(np.asarray, nn.unbox(params)), cfg


@pytest.fixture()
def hf_dir(tmp_path):
  params, cfg = tiny_params()
  out = str(tmp_path / "hf")
  clip_weights.export_hf(params, cfg, VOCAB, LENGTH, SIZE, out)
  return out, params


def edit_weights(directory, change):
  path = os.path.join(directory, "model.safetensors")
  sd = load_file(path)
  change(sd)
  save_file(sd, path, metadata={"format": "pt"})


def test_a_complete_file_loads_exactly(hf_dir):
  directory, params = hf_dir
  loaded, _, sizes = clip_weights.load_hf(directory)
  assert sizes == dict(vocab_size=VOCAB, context_length=LENGTH, image_size=SIZE)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_more_layers_than_the_config_says_is_an_error(hf_dir):
  directory, _ = hf_dir
  edit_weights(directory, lambda sd: sd.update({
      k.replace("layers.0.", "layers.1."): v for k, v in list(sd.items())
      if k.startswith("vision_model.encoder.layers.0.")}))
  with pytest.raises(WeightImportError, match=r"vision_config.num_hidden_layers says 1 layer\(s\), "
                     r"but .* holds weights for 2"):
    clip_weights.load_hf(directory)


def test_a_missing_tensor_is_named(hf_dir):
  directory, _ = hf_dir
  edit_weights(directory, lambda sd: sd.pop("text_model.encoder.layers.0.mlp.fc1.bias"))
  with pytest.raises(WeightImportError,
                     match="tensor 'text_model.encoder.layers.0.mlp.fc1.bias' is missing"):
    clip_weights.load_hf(directory)


def test_unexpected_tensors_are_an_error_unless_strict_false(hf_dir, caplog):
  directory, params = hf_dir
  edit_weights(directory, lambda sd: sd.update({
      "extra_head.weight": np.ones((2, 2), np.float32),
      "text_model.embeddings.position_ids": np.arange(LENGTH)[None]}))  # a buffer: ignored
  with pytest.raises(WeightImportError, match=r"1 tensor\(s\) have no place .*: extra_head.weight"
                     r".*strict=False"):
    clip_weights.load_hf(directory)
  with caplog.at_level(logging.WARNING):
    loaded, _, _ = clip_weights.load_hf(directory, strict=False)
  assert "strict=False: skipped 1 tensor(s) with no place in the model: extra_head.weight" in caplog.text
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_non_finite_weights_are_an_error(hf_dir):
  directory, _ = hf_dir
  def poison(sd):
    sd["vision_model.post_layernorm.bias"][3] = np.nan
  edit_weights(directory, poison)
  with pytest.raises(WeightImportError, match="'vision_model.post_layernorm.bias' holds non-finite"):
    clip_weights.load_hf(directory)


def test_wrong_shapes_are_named_at_load_time(hf_dir):
  directory, _ = hf_dir
  edit_weights(directory, lambda sd: sd.update({
      "vision_model.embeddings.position_embedding.weight": np.zeros((10, 32), np.float32)}))
  with pytest.raises(WeightImportError,
                     match=r"image/pos_embedding: \(10, 32\) in the file, \(17, 32\) from its config"):
    clip_weights.load_hf(directory)


def test_config_and_weights_disagreeing_names_both(hf_dir):
  directory, _ = hf_dir
  config = tiny_config()
  config.init_from = f"hf:{directory}"
  config.model.image.heads, config.model.text.depth = 4, 2
  with pytest.raises(ValueError, match=rf"config.model.image.heads=4 but hf:{directory} has 2; "
                     rf"config.model.text.depth=2 but hf:{directory} has 1"):
    state_lib.imported_params(config, {})


def test_the_tokenizer_a_fine_tune_uses(hf_dir, tmp_path):
  directory, _ = hf_dir
  config = tiny_config()
  config.init_from = f"hf:{directory}"
  with pytest.raises(FileNotFoundError, match="holds no tokenizer .* --config.data.tokenizer=FILE"):
    rundir.tokenizer_file(config, "/data")
  config.data.tokenizer = "/elsewhere/tokenizer.model"
  assert rundir.tokenizer_file(config, "/data") == "/elsewhere/tokenizer.model"
  config.data.tokenizer = ""
  with open(os.path.join(directory, "tokenizer.json"), "w") as f:
    f.write("{}")
  assert rundir.tokenizer_file(config, "/data") == os.path.join(directory, "tokenizer.json")
  config.init_from = ""
  assert rundir.tokenizer_file(config, "/data") == "/data/tokenizer.model"


# ---------------------------------------------------------------- TorchScript

WRITE_TORCH_FILES = textwrap.dedent("""
    import sys, numpy as np, torch

    class Node(torch.nn.Module):
      def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    arrays = dict(np.load(sys.argv[1]))
    root = Node()
    for name, value in arrays.items():
      *path, leaf = name.split(".")
      module = root
      for part in path:
        if not hasattr(module, part):
          module.add_module(part, Node())
        module = getattr(module, part)
      module.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(value).half()))
    root.register_buffer("input_resolution", torch.tensor(32))  # as OpenAI's files have
    torch.jit.save(torch.jit.script(root), sys.argv[2])

    class Options:  # a pickled Python object: weights_only=True refuses it
      pass
    torch.save({"state_dict": {}, "options": Options()}, sys.argv[3])
""")


@pytest.mark.skipif(not TORCH_PYTHON and os.environ.get("ALIP_SKIP_TORCH") == "1",
                    reason="ALIP_SKIP_TORCH=1 and no ALIP_TORCH_PYTHON")
def test_openai_torchscript_archive_imports(tmp_path, monkeypatch):
  """OpenAI's released .pt files are TorchScript archives (fp16): read
  through torch.jit.load(map_location='cpu').state_dict()."""
  if not TORCH_PYTHON:
    pytest.fail("ALIP_TORCH_PYTHON is not set: run the tests through tests/run.sh")
  from alip_jax.models.open_clip_format import state_dict as openai_state_dict
  params, _ = tiny_params()
  npz, script, pickle = (str(tmp_path / n) for n in ("sd.npz", "ViT-T.pt", "legacy.pt"))
  np.savez(npz, **openai_state_dict(params))
  writer = tmp_path / "write_torch_files.py"  # TorchScript compiles from source files
  writer.write_text(WRITE_TORCH_FILES)
  run = subprocess.run([TORCH_PYTHON, str(writer), npz, script, pickle],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  monkeypatch.setenv("ALIP_TORCH_PYTHON", TORCH_PYTHON)
  loaded, model_cfg, sizes = openai_weights.load_openai(script, act="gelu", eot_id=3, head_width=16)
  assert sizes == dict(vocab_size=VOCAB, context_length=LENGTH, image_size=SIZE)
  # fp16 in the file: equal after the same rounding.
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(np.float16).astype(np.float32)),
               loaded, params)
  with pytest.raises(ValueError, match="holds Python objects besides tensors") as error:
    clip_weights.read_state_dict(pickle)
  assert "weights_only=False" not in str(error.value)
  monkeypatch.delenv("ALIP_TORCH_PYTHON")
  with pytest.raises(ImportError, match="is a TorchScript archive; reading it needs torch"):
    clip_weights.read_state_dict(script)
