"""Parity with transformers' CLIPModel (torch, CPU), both directions, fp32.

The torch side runs in its own interpreter (tests/torch_reference.py,
ALIP_TORCH_PYTHON, set up by tests/run.sh). Nothing is downloaded: the HF
model is randomly initialised and saved by the test, the BPE tokenizer is
built by the test.
"""

import json
import os
import subprocess

import jax
import numpy as np
import pytest

import alip_jax
from alip_jax.data.tokenizer import HFTokenizer
from alip_jax.losses.contrastive import LOGIT_SCALE_INIT
from alip_jax.models import clip_weights, two_towers
import ml_collections

TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")
REFERENCE = os.path.join(os.path.dirname(__file__), "torch_reference.py")
TEXTS = ["a photo of a dog", "two red squares", "", "!!", "a long caption " * 30]
pytestmark = pytest.mark.skipif(
    not TORCH_PYTHON and os.environ.get("ALIP_SKIP_TORCH") == "1",
    reason="ALIP_SKIP_TORCH=1 and no ALIP_TORCH_PYTHON")


def torch_python():
  if not TORCH_PYTHON:
    pytest.fail("ALIP_TORCH_PYTHON is not set: run the tests through tests/run.sh, which makes "
                "the torch venv, or set ALIP_SKIP_TORCH=1 to skip the HF parity tests")
  return TORCH_PYTHON


def reference(*args):
  result = subprocess.run([torch_python(), REFERENCE, *args], capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def build_bpe_tokenizer(path):
  """A tiny CLIP-like BPE tokenizer.json (lower-casing, </w> suffix, the two
  CLIP special tokens), trained on a few sentences."""
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
  tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.decoder = decoders.BPEDecoder(suffix="</w>")
  trainer = trainers.BpeTrainer(vocab_size=90, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                end_of_word_suffix="</w>")
  tok.train_from_iterator(["a photo of a dog", "two red squares", "a cat on a mat!"] * 10, trainer)
  tok.save(path)


def inputs_file(tmp_path, tokenizer, image_size=32, batch=5):
  rng = np.random.default_rng(0)
  path = str(tmp_path / "inputs.npz")
  np.savez(path, pixel_values=rng.normal(size=(batch, 3, image_size, image_size)).astype(np.float32),
           input_ids=tokenizer.encode_batch(TEXTS[:batch]), vocab_size=tokenizer.vocab_size,
           sot_id=tokenizer.sot_id, eot_id=tokenizer.eot_id)
  return path


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_import_hf_clipmodel(tmp_path, act):
  tok_path = str(tmp_path / "tokenizer.json")
  build_bpe_tokenizer(tok_path)
  tokenizer = HFTokenizer(tok_path, context_length=16)
  inputs = inputs_file(tmp_path, tokenizer)
  model_dir = str(tmp_path / "hf")
  reference("make", model_dir, inputs, act)
  os.replace(tok_path, os.path.join(model_dir, "tokenizer.json"))
  want = dict(np.load(os.path.join(model_dir, "ref.npz")))

  m = alip_jax.load(model_dir)
  assert m.model_config.act == act and m.image_size == 32
  pixels = np.load(inputs)["pixel_values"].transpose(0, 2, 3, 1)  # NCHW → NHWC, normalised
  image = m.encode_image(pixels)
  text = m.encode_text(TEXTS)  # through our HFTokenizer wrapper
  np.testing.assert_allclose(image, want["image_embeds"], atol=1e-4)
  np.testing.assert_allclose(text, want["text_embeds"], atol=1e-4)
  np.testing.assert_allclose(m.logit_scale * image @ text.T, want["logits_per_image"], atol=1e-4)
  # Fine-tuning from these weights tokenizes with the HF tokenizer and pools
  # at its EOT (not the SentencePiece id 3).
  from alip_jax import state as state_lib
  from conftest import tiny_config
  config = tiny_config()
  config.init_from, config.data.context_length = f"hf:{model_dir}", 16
  config.model.act = act
  model, tokenizer = state_lib.make_model_and_tokenizer(config, data_dir="/nonexistent")
  assert isinstance(tokenizer, HFTokenizer) and model.text.eot_id == tokenizer.eot_id != 3
  print(f"import {act}: max |Δ| image {np.abs(image - want['image_embeds']).max():.2e} "
        f"text {np.abs(text - want['text_embeds']).max():.2e}")


def test_export_loads_in_transformers_with_the_same_outputs(tmp_path):
  cfg = ml_collections.ConfigDict(dict(
      image=dict(patch_size=8, width=48, depth=2, heads=4), text=dict(width=32, depth=2, heads=4),
      embed_dim=24, dtype="float32", remat="none", scan=True, act="gelu", attention="", eot_id=3))
  vocab, length, size = 64, 16, 32
  model = two_towers.from_config(cfg, vocab, length, eot_id=cfg.eot_id,
                                 logit_scale_init=LOGIT_SCALE_INIT)
  tokens = np.zeros((4, length), np.int32)
  for i, n in enumerate((1, 5, 14, 9)):
    tokens[i, 0], tokens[i, 1:n + 1], tokens[i, n + 1] = 2, np.arange(4, 4 + n) % vocab, 3
  images = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype(np.float32)
  import flax.linen as nn
  params = nn.unbox(model.init(jax.random.key(3), images, {"raw": tokens})["params"])
  # Non-trivial norms and biases, so that a layout slip shows.
  params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(x.size), x.shape),
                        params)
  image = np.asarray(model.apply({"params": params}, images, method=model.encode_image))
  text = np.asarray(model.apply({"params": params}, tokens, method=model.encode_text))
  out = str(tmp_path / "export")
  clip_weights.export_hf(params, cfg, vocab, length, size, out)  # scanned params: unstacked
  inputs = str(tmp_path / "inputs.npz")
  np.savez(inputs, pixel_values=images.transpose(0, 3, 1, 2), input_ids=tokens)
  result = reference("check", out, inputs)
  got = json.loads(result.stdout.strip().splitlines()[-1])
  assert all(not v for v in got["loading_info"].values()), got["loading_info"]
  for phrase in ("newly initialized", "not used", "were not initialized", "MISSING", "UNEXPECTED"):
    assert phrase not in result.stderr, result.stderr[-2000:]
  np.testing.assert_allclose(got["image_embeds"], image, atol=1e-4)
  np.testing.assert_allclose(got["text_embeds"], text, atol=1e-4)
  logit_scale = float(np.exp(params["logit_scale"]))
  np.testing.assert_allclose(got["logits_per_image"], logit_scale * image @ text.T, atol=1e-4)
  print(f"export: max |Δ| image {np.abs(np.array(got['image_embeds']) - image).max():.2e} "
        f"text {np.abs(np.array(got['text_embeds']) - text).max():.2e}")
