"""alip_jax.load on a training workdir, an exported HF directory and an
OpenAI-layout state dict; init_from; export → import round trips."""

import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

import alip_jax
from alip_jax import mesh as mesh_lib, state as state_lib, train
from alip_jax.models import clip_weights, open_clip_format, openai_weights
from conftest import restore_saved_state, tiny_config


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
  """A 2-step run whose data directory is moved away afterwards."""
  workdir = str(tmp_path_factory.mktemp("run"))
  data = str(tmp_path_factory.mktemp("data_copy") / "data")
  shutil.copytree(tiny_corpus, data)
  config = tiny_config()
  config.data.dir = data
  config.train.steps, config.train.checkpoint_every = 2, 2
  config.mesh = dict(data=-1)
  train.train_and_evaluate(config, workdir)
  # The trainer's model and tokenizer, and the params it saved at the end.
  model, tokenizer = state_lib.make_model_and_tokenizer(config, data)
  params = restore_saved_state(workdir)[1]["params"]
  shutil.rmtree(data)  # load must not need it
  images = np.stack([np.full((32, 32, 3), 40 * i, np.uint8) for i in range(5)])
  texts = ["a red circle", "two blue squares on grass", "x", "", "a very long text " * 20]
  mesh = mesh_lib.make_mesh(dict(data=1), jax.devices()[:1])
  enc_image, enc_text = state_lib.make_encoders(model, mesh)
  want = (np.asarray(enc_image(params, images)),
          np.asarray(enc_text(params, tokenizer.encode_batch(texts))))
  return workdir, images, texts, want


def test_load_workdir_on_one_device_and_on_a_mesh(trained):
  workdir, images, texts, (want_image, want_text) = trained
  for mesh in (None, mesh_lib.make_mesh(dict(data=2, fsdp=2, model=2))):
    m = alip_jax.load(workdir, mesh=mesh)
    assert m.step == 2 and m.image_size == 32
    # 5 items: not a multiple of the mesh's batch ways (8) → padded, then cut.
    np.testing.assert_allclose(m.encode_image(images), want_image, atol=2e-6)
    np.testing.assert_allclose(m.encode_text(texts), want_text, atol=2e-6)
  m = alip_jax.load(os.path.join(workdir, "checkpoints", "2"))
  np.testing.assert_allclose(m.encode_text(texts), want_text, atol=2e-6)
  np.testing.assert_allclose(np.linalg.norm(m.encode_image(images), axis=-1), 1, rtol=1e-5)


def test_preprocess_resizes_and_crops(trained, tmp_path):
  m = alip_jax.load(trained[0])
  path = str(tmp_path / "wide.png")
  Image.new("RGBA", (90, 45), (255, 0, 0, 128)).save(path)
  x = m.preprocess(path)
  # Half-transparent red onto white, as the training data is decoded.
  assert x.shape == (32, 32, 3) and x.dtype == np.uint8 and tuple(x[16, 16]) == (255, 127, 127)


def test_export_then_load_gives_the_same_embeddings(trained, tmp_path):
  workdir, images, texts, (want_image, want_text) = trained
  out = str(tmp_path / "hf")
  alip_jax.export(alip_jax.load(workdir), out)
  assert {"config.json", "model.safetensors", "tokenizer.model"} <= set(os.listdir(out))
  m = alip_jax.load(out)
  np.testing.assert_allclose(m.encode_image(images), want_image, atol=2e-6)
  np.testing.assert_allclose(m.encode_text(texts), want_text, atol=2e-6)


def test_openai_layout_import(trained, tmp_path):
  """Our params written in the OpenAI/open_clip key layout (fused in_proj,
  c_fc/c_proj, visual.proj as [width, embed]) import to the same model."""
  workdir, images, texts, (want_image, want_text) = trained
  m = alip_jax.load(workdir)
  sd = open_clip_format.state_dict(jax.device_get(m.params))
  from safetensors.numpy import save_file
  path = str(tmp_path / "openai.safetensors")
  save_file(sd, path)
  params, model_cfg, sizes = openai_weights.load_openai(path, act="gelu", eot_id=3, head_width=16)
  assert dict(model_cfg.image) == dict(patch_size=8, width=32, depth=1, heads=2)
  assert sizes == dict(vocab_size=m.tokenizer.vocab_size, context_length=32, image_size=32)
  jax.tree.map(np.testing.assert_array_equal, params, jax.device_get(m.params))


def test_init_from_an_exported_model(trained, tiny_corpus, tmp_path):
  workdir = trained[0]
  out = str(tmp_path / "hf")
  alip_jax.export(alip_jax.load(workdir), out)
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.init_from = f"hf:{out}"
  config.train.steps = 1
  config.optim.lr = 0.0  # one step that changes nothing: the params are the import
  config.mesh = dict(fsdp=-1)
  train.train_and_evaluate(config, str(tmp_path / "finetune"))
  got = restore_saved_state(str(tmp_path / "finetune"))[1]["params"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               got, jax.device_get(alip_jax.load(workdir).params))
  config.model.act = "quick_gelu"
  with pytest.raises(ValueError, match="set --config.model.act=gelu"):
    train.train_and_evaluate(config, str(tmp_path / "wrong_act"))
  config.model.act, config.model.embed_dim = "gelu", 48
  with pytest.raises(ValueError, match=r"config.model.embed_dim=48 but hf:.* has 32"):
    train.train_and_evaluate(config, str(tmp_path / "wrong_size"))


def test_hf_legacy_eos_id_pools_at_the_highest_id():
  """OpenAI's HF configs say eos_token_id=2; transformers then pools at
  argmax(input_ids), i.e. at EOT = vocab_size − 1 in CLIP's BPE."""
  tower = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=1, num_attention_heads=1)
  hf = {"projection_dim": 32,
        "text_config": dict(tower, vocab_size=49408, max_position_embeddings=77, eos_token_id=2),
        "vision_config": dict(tower, patch_size=32, image_size=224)}
  model_cfg, sizes = clip_weights.hf_model_config(hf)
  assert model_cfg.eot_id == 49407 and model_cfg.act == "quick_gelu"
  assert sizes == dict(vocab_size=49408, context_length=77, image_size=224)
  hf["text_config"]["eos_token_id"] = 7
  assert clip_weights.hf_model_config(hf)[0].eot_id == 7
