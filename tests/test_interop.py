"""Exports other tools load (transformers, open_clip) and loading what people
have (hf-hub: names, sharded checkpoints, open_clip directories, zoo aliases);
LoadedModel's bucketed batches and zero_shot.

The torch side runs in its own interpreter (tests/torch_reference.py,
ALIP_TORCH_PYTHON), as in test_hf_parity.py. Nothing is downloaded: the Hub
tests read a cache directory laid out as huggingface_hub lays it out.
"""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import alip_jax
from alip_jax import hub, state as state_lib
from alip_jax.data import tokenizer_json
from alip_jax.data.tokenizer import Tokenizer
from alip_jax.losses.contrastive import LOGIT_SCALE_INIT
from alip_jax.models import open_clip_format, two_towers, zoo
from conftest import tiny_config, two_step_run

TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")
REFERENCE = os.path.join(os.path.dirname(__file__), "torch_reference.py")
needs_torch = pytest.mark.skipif(not TORCH_PYTHON and os.environ.get("ALIP_SKIP_TORCH") == "1",
                                 reason="ALIP_SKIP_TORCH=1 and no ALIP_TORCH_PYTHON")
TEXTS = ["a red circle", "Two BLUE squares on grass!", "", "x", "a very long text " * 20,
         "café  naïve\tﬁne ＡＢＣ 🐶 漢字", "  spaces   around  "]


def reference(*args, **env):
  if not TORCH_PYTHON:
    pytest.fail("ALIP_TORCH_PYTHON is not set: run the tests through tests/run.sh, which makes "
                "the torch venv, or set ALIP_SKIP_TORCH=1 to skip the torch tests")
  result = subprocess.run([TORCH_PYTHON, REFERENCE, *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory):
  """A 2-step run with an eval at the end (eval.json for the model card)."""
  workdir, _, _ = two_step_run(tiny_corpus, tmp_path_factory)
  return workdir, alip_jax.load(workdir)


# At the tiny model's 32 px, wide.jpg resizes to 35×32: the centre crop's
# offset is 1.5, which the contract floors (transformers too) and open_clip's
# CenterCrop rounds (half to even: 2). The others' offsets are whole or 0.5
# (4.5 → 4 both ways); tall.png is transparent (alpha 0 at the top).
IMAGES = (("photo.jpg", (61, 47), "RGB"), ("tall.png", (40, 90), "RGBA"),
          ("gray.jpg", (33, 35), "L"), ("big.jpg", (120, 80), "RGB"),
          ("wide.jpg", (70, 64), "RGB"))


def image_files(directory):
  """Real image files: JPEG and PNG, odd sizes, portrait and landscape,
  grayscale, half-transparent."""
  rng = np.random.default_rng(0)
  paths = []
  for name, size, mode in IMAGES:
    yy, xx = np.mgrid[:size[1], :size[0]]
    base = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "RGBA":
      image.putalpha(Image.fromarray((yy * 255 // size[1]).astype(np.uint8)))
    path = os.path.join(directory, name)
    image.convert(mode).save(path, quality=90) if name.endswith(".jpg") else image.save(path)
    paths.append(path)
  return paths


def rgb_copies(paths, directory):
  """Each file's RGB image under the preprocessing contract (transparency
  composited onto white: alip_jax.data.web.to_rgb), as lossless PNGs: what
  to hand to a tool that drops alpha instead (open_clip, transformers'
  pipeline)."""
  from alip_jax.data import web
  copies = []
  for path in paths:
    copy = os.path.join(directory, "rgb_" + os.path.basename(path).rsplit(".", 1)[0] + ".png")
    web.to_rgb(Image.open(path)).save(copy)
    copies.append(copy)
  return copies


def normalize(uint8_images):
  """Our on-device normalisation (two_towers.normalize_images), in numpy."""
  x = uint8_images.astype(np.float32) / 255.0
  return (x - np.asarray(two_towers.CLIP_MEAN, np.float32)) / np.asarray(two_towers.CLIP_STD,
                                                                         np.float32)


# ---------------------------------------------------------------- tokenizer.json

def test_tokenizer_json_gives_our_ids(tiny_corpus, tmp_path):
  """The converted SentencePiece model encodes to our ids, through the
  `tokenizers` library (transformers' is checked in test_hf_export_…)."""
  model = os.path.join(tiny_corpus, "tokenizer.model")
  ours = Tokenizer(model, context_length=16)
  converted = tokenizer_json.from_sentencepiece(model, context_length=16)
  rng = np.random.default_rng(0)
  # No combining marks: see tokenizer_json's docstring (tokenizers#2116).
  alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ  \t\n.,!?'\"-_▁éüßÅﬁ①Ⅻ＠ｱ漢字🐶\u00a0\u3000")
  fuzz = ["".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(500)]
  for text in TEXTS + fuzz:
    np.testing.assert_array_equal(converted.encode(text).ids, ours.encode(text), err_msg=repr(text))
  # The HF wrapper on the converted file (what alip_jax.load uses when an
  # export has no tokenizer.model): SOT/EOT from tokenizer_config.json.
  tokenizer_json.write_hf_tokenizer(model, 16, str(tmp_path))
  from alip_jax.data.tokenizer import HFTokenizer
  hf = HFTokenizer(str(tmp_path / "tokenizer.json"), context_length=16)
  assert (hf.sot_id, hf.eot_id, hf.vocab_size) == (2, 3, ours.vocab_size)
  some = TEXTS + fuzz[:50]
  np.testing.assert_array_equal(hf.encode_batch(some), ours.encode_batch(some))


# ---------------------------------------------------------------- exports

@pytest.mark.slow
@needs_torch
def test_hf_export_through_transformers(trained, tmp_path):
  """The preprocessing contract (README, model card) in transformers:
  AutoProcessor with backend="pil" and CLIPModel on our HF export, fed real
  image files (odd sizes, grayscale, transparent, a half-pixel crop offset),
  give our pixels, ids and embeddings; the zero-shot pipeline gives our
  probabilities on the files' RGB images."""
  workdir, m = trained
  out = str(tmp_path / "hf")
  alip_jax.export(m, out)
  assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
          "tokenizer_config.json", "tokenizer.model", "README.md"} <= set(os.listdir(out))
  paths = image_files(str(tmp_path))
  labels = ["red circle", "blue square", "green triangle"]
  request = str(tmp_path / "request.json")
  with open(request, "w") as f:
    json.dump({"images": paths, "rgb_images": rgb_copies(paths, str(tmp_path)), "texts": TEXTS,
               "labels": labels}, f)
  reference("processor", out, request, str(tmp_path / "got.npz"))
  got = dict(np.load(tmp_path / "got.npz"))
  # With torchvision installed AutoProcessor picks its torchvision image
  # processor, which resizes with other kernels: the contract says
  # backend="pil".
  assert list(got["chosen_classes"]) == ["CLIPProcessor", "CLIPImageProcessor"]
  assert list(got["classes"][:2]) == ["CLIPProcessor", "CLIPImageProcessorPil"], got["classes"]

  # Tokens: the same ids, row for row (padding to the context length).
  np.testing.assert_array_equal(got["input_ids"], m.tokenizer.encode_batch(TEXTS))
  # Pixels: the same resize, floor crop and white background (PIL bicubic
  # on the same 8-bit image: the same integers), then /255 and mean/std in
  # float32 (ours) vs transformers' rescale-then-normalise: float rounding
  # only, ≤ 1 ulp of values up to ~2.6, so 1e-5.
  uint8 = np.stack([m.preprocess(p) for p in paths])
  pixels = got["pixel_values"].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(pixels, normalize(uint8), atol=1e-5, rtol=0)
  # Embeddings of what each side's own preprocessing gives: within 1e-4.
  np.testing.assert_allclose(got["image_embeds"], m.encode_image(uint8), atol=1e-4)
  np.testing.assert_allclose(got["text_embeds"], m.encode_text(TEXTS), atol=1e-4)
  # The pipeline (its template) on the RGB images = ours on the files; on the
  # transparent file itself it differs: it drops alpha (load_image's
  # convert("RGB")), which the contract tells users to composite first.
  ours = m.zero_shot(paths, labels, templates=["This is a photo of {}."])
  np.testing.assert_allclose(got["pipeline_rgb_scores"], ours, atol=1e-4)
  transparent = [i for i, (_, _, mode) in enumerate(IMAGES) if mode == "RGBA"]
  opaque = [i for i in range(len(IMAGES)) if i not in transparent]
  np.testing.assert_allclose(got["pipeline_scores"][opaque], ours[opaque], atol=1e-4)
  assert np.abs(got["pipeline_scores"][transparent] - ours[transparent]).max() > 1e-3
  print(f"hf export: max |Δ| pixels {np.abs(pixels - normalize(uint8)).max():.1e}, image "
        f"{np.abs(got['image_embeds'] - m.encode_image(uint8)).max():.1e}, text "
        f"{np.abs(got['text_embeds'] - m.encode_text(TEXTS)).max():.1e}, pipeline "
        f"{np.abs(got['pipeline_rgb_scores'] - ours).max():.1e}")


def test_model_card_is_filled_from_the_run(trained, tmp_path):
  workdir, m = trained
  out = str(tmp_path / "card")
  alip_jax.export(m, out, repo_id="someone/alip-tiny")
  card = open(os.path.join(out, "README.md")).read()
  evals = json.load(open(os.path.join(workdir, "eval.json")))["2"]
  r1 = next(k for k in evals if "R@1" in k)
  assert f"| {r1} | {100 * evals[r1]:.2f} % |" in card and "at step 2" in card
  assert "loss: alip" in card and "global batch 16" in card and "32×32 px, patch 8" in card
  assert 'pipeline("zero-shot-image-classification", model="someone/alip-tiny")' in card
  with open(os.path.join(out, "preprocessor_config.json")) as f:
    pre = json.load(f)
  assert pre["size"] == {"shortest_edge": 32} and pre["crop_size"] == {"height": 32, "width": 32}
  assert pre["resample"] == 3 and pre["image_mean"] == list(two_towers.CLIP_MEAN)
  # The preprocessing contract, and how transformers gets it.
  assert "at offset floor((side − 32) / 2)" in card and "composited onto white" in card
  assert 'AutoProcessor.from_pretrained(DIR, backend="pil")' in card
  assert_readable_as_umask_says(os.path.join(out, "model.safetensors"))


def assert_readable_as_umask_says(path):
  """The mode open() gives a new file (0666 less the umask), not 0600."""
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, oct(os.stat(path).st_mode)


def random_model(act="gelu", logit_bias=False):
  """Tiny towers whose text head width (8) differs from the image one (12),
  with non-trivial norms and biases, so that a layout slip shows."""
  cfg = ml_collections.ConfigDict(dict(
      image=dict(patch_size=8, width=48, depth=2, heads=4), text=dict(width=32, depth=2, heads=4),
      embed_dim=24, dtype="float32", remat="none", scan=True, act=act, attention="", eot_id=3))
  model = two_towers.from_config(cfg, 64, 16, eot_id=cfg.eot_id, logit_scale_init=LOGIT_SCALE_INIT,
                                 logit_bias_init=-5.0 if logit_bias else None)
  tokens = np.zeros((4, 16), np.int32)
  for i, n in enumerate((1, 5, 14, 9)):
    tokens[i, 0], tokens[i, 1:n + 1], tokens[i, n + 1] = 2, np.arange(4, 4 + n) % 64, 3
  images = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
  import flax.linen as nn
  params = nn.unbox(jax.jit(model.init)(jax.random.key(3), images, {"raw": tokens})["params"])
  rng = np.random.default_rng(2)  # numpy: one jax op per leaf compiles once per shape
  params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.normal(size=x.shape).astype(np.float32),
                        params)
  image, text = encoders(model)(params, images, tokens)
  return cfg, params, images, tokens, np.asarray(image), np.asarray(text)


def encoders(model):
  """(params, images, tokens) → (image, text embeddings), compiled once."""
  return jax.jit(lambda p, x, t: (model.apply({"params": p}, x, method=model.encode_image),
                                  model.apply({"params": p}, t, method=model.encode_text)))


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_open_clip_export_loads_back(tmp_path, act):
  cfg, params, images, tokens, image, text = random_model(act, logit_bias=True)
  out = str(tmp_path / "oc")
  open_clip_format.export(params, cfg, 64, 16, 32, out, eot_id=3, hf_tokenizer_name="x/y")
  got, model_cfg, sizes = open_clip_format.load(out)
  assert model_cfg.act == act and model_cfg.text.heads == 4 and model_cfg.image.heads == 4
  assert sizes == dict(vocab_size=64, context_length=16, image_size=32)
  model = two_towers.from_config(model_cfg, 64, 16, eot_id=model_cfg.eot_id, logit_scale_init=0.0)
  got_image, got_text = encoders(model)(got, images, tokens)
  np.testing.assert_allclose(got_image, image, atol=2e-6)
  np.testing.assert_allclose(got_text, text, atol=2e-6)


def rounded_crop(path, size):
  """`path` as open_clip's preprocessing crops it: our decode and resize,
  then torchvision's CenterCrop offset, round((side - size) / 2), half to
  even, where the contract floors."""
  from alip_jax.data import web
  from alip_jax.data.pipeline import EVAL_RESAMPLE
  image = web.to_rgb(Image.open(path))
  short, long = sorted(image.size)
  new_long = int(size * long / short)
  w, h = (size, new_long) if image.width <= image.height else (new_long, size)
  image = image.resize((w, h), EVAL_RESAMPLE)
  left, top = round((w - size) / 2), round((h - size) / 2)
  return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


@pytest.mark.slow
@needs_torch
def test_open_clip_export_in_torch(trained, tmp_path):
  """open_clip itself (tests/run.sh installs it; not importing is a
  failure) on our open_clip export: its config fields against open_clip's
  dataclasses, the weights by a strict load, the encoders, its tokenizer and
  preprocessing on real files (the contract and its two documented
  differences), from a local directory and as an hf-hub: id from a cache
  laid out by huggingface_hub's own functions, offline."""
  cfg, params, images, tokens, image, text = random_model("quick_gelu", logit_bias=True)
  out = str(tmp_path / "oc")
  open_clip_format.export(params, cfg, 64, 16, 32, out, eot_id=3, hf_tokenizer_name="x/y")
  inputs = str(tmp_path / "inputs.npz")
  np.savez(inputs, pixel_values=images.transpose(0, 3, 1, 2), input_ids=tokens)
  reference("open_clip", f"local-dir:{out}", out, inputs, str(tmp_path / "got.npz"))
  got = dict(np.load(tmp_path / "got.npz"))
  assert str(got["status"]) == "open_clip 3.3.0"
  assert json.loads(str(got["unknown_fields"])) == {
      "model_cfg": [], "vision_cfg": [], "text_cfg": [], "preprocess_cfg": []}
  np.testing.assert_allclose(got["image"], image, atol=1e-4)
  np.testing.assert_allclose(got["text"], text, atol=1e-4)

  # A trained model with its tokenizer, as it would be uploaded.
  workdir, m = trained
  out = str(tmp_path / "oc_trained")
  alip_jax.export(m, out, format="open_clip", repo_id="alip/tiny-oc")
  paths = image_files(str(tmp_path))
  rgb = rgb_copies(paths, str(tmp_path))
  np.savez(inputs, texts=np.array(TEXTS[:2]), image_paths=np.array(paths + rgb))
  reference("open_clip", f"local-dir:{out}", out, inputs, str(tmp_path / "got.npz"))
  got = dict(np.load(tmp_path / "got.npz"))
  assert str(got["tokenizer"]) == "HFTokenizer"
  np.testing.assert_array_equal(got["tokens"], m.tokenizer.encode_batch(TEXTS[:2]))
  np.testing.assert_allclose(got["texts_embeds"], m.encode_text(TEXTS[:2]), atol=1e-4)
  ours = np.stack([m.preprocess(p) for p in paths])
  pixels = got["pixels"].transpose(0, 2, 3, 1)
  n = len(paths)
  names = [name for name, _, _ in IMAGES]
  wide, tall = names.index("wide.jpg"), names.index("tall.png")
  same = [i for i in range(n) if i not in (wide, tall)]
  # Opaque files with a whole or x.5-even crop offset: our pixels and embeddings.
  np.testing.assert_allclose(pixels[same], normalize(ours[same]), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got["images_embeds"][same], m.encode_image(ours[same]), atol=1e-4)
  # The transparent file: open_clip drops alpha; its RGB image (composited
  # onto white, as the contract says) gives ours.
  assert np.abs(pixels[tall] - normalize(ours[tall])).max() > 0.5
  np.testing.assert_allclose(pixels[n + tall], normalize(ours[tall]), atol=1e-5, rtol=0)
  np.testing.assert_allclose(got["images_embeds"][n + tall], m.encode_image(ours[[tall]])[0],
                             atol=1e-4)
  # A crop offset of 1.5: open_clip rounds it to 2 where the contract
  # floors it to 1, a one-pixel shift, exactly.
  shifted = rounded_crop(paths[wide], m.image_size)
  assert np.abs(shifted.astype(int) - ours[wide]).max() > 10
  np.testing.assert_allclose(pixels[wide], normalize(shifted), atol=1e-5, rtol=0)
  np.testing.assert_allclose(pixels[n + wide], normalize(shifted), atol=1e-5, rtol=0)

  # hf-hub:alip/tiny-oc from a Hub cache, offline: get_tokenizer goes
  # through transformers' AutoTokenizer, which needs the export's config.json.
  cache = str(tmp_path / "hub")
  hub_cache(cache, "alip/tiny-oc", out)
  np.savez(inputs, texts=np.array(TEXTS[:2]), image_paths=np.array(paths[:1]))
  reference("open_clip", "hf-hub:alip/tiny-oc", out, inputs, str(tmp_path / "got.npz"),
            HF_HUB_CACHE=cache)
  from_hub = dict(np.load(tmp_path / "got.npz"))
  np.testing.assert_array_equal(from_hub["tokens"], got["tokens"])
  np.testing.assert_allclose(from_hub["images_embeds"], got["images_embeds"][:1], atol=1e-6)
  print(f"open_clip export: {got['status']}; max |Δ| image "
        f"{np.abs(got['images_embeds'][same] - m.encode_image(ours[same])).max():.1e} text "
        f"{np.abs(got['texts_embeds'] - m.encode_text(TEXTS[:2])).max():.1e}")


def test_open_clip_export_of_a_run_loads_in_alip_jax(trained, tmp_path):
  workdir, m = trained
  out = str(tmp_path / "oc")
  alip_jax.export(m, out, format="open_clip")
  with open(os.path.join(out, "open_clip_config.json")) as f:
    text_cfg = json.load(f)["model_cfg"]["text_cfg"]
  assert text_cfg["pool_type"] == "eos" and text_cfg["eos_id"] == 3
  assert text_cfg["hf_tokenizer_name"] == "oc"
  with open(os.path.join(out, "config.json")) as f:  # for AutoTokenizer, not a CLIPModel
    assert "model_type" not in json.load(f)
  assert_readable_as_umask_says(os.path.join(out, "open_clip_model.safetensors"))
  card = open(os.path.join(out, "README.md")).read()
  assert "its centre crop rounds the offset" in card and "drops transparency" in card
  back = alip_jax.load(out)
  assert isinstance(back.tokenizer, Tokenizer)
  images = np.stack([np.full((32, 32, 3), 50 * i, np.uint8) for i in range(3)])
  np.testing.assert_allclose(back.encode_image(images), m.encode_image(images), atol=2e-6)
  np.testing.assert_allclose(back.encode_text(TEXTS), m.encode_text(TEXTS), atol=2e-6)


# ---------------------------------------------------------------- loading

# Files the Hub keeps in Git LFS (its default .gitattributes): their cache
# blob is named by the file's sha256, others by their git blob hash.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".model")


def hub_cache(cache, repo_id, source_dir, commit="0123456789abcdef0123456789abcdef01234567"):
  """`source_dir`'s files as `hf_hub_download` caches them, written with
  huggingface_hub's own functions (repo folder, blob and pointer paths,
  symlinks, refs/main, CACHEDIR.TAG); checked by its scan_cache_dir."""
  from pathlib import Path

  import huggingface_hub
  from huggingface_hub import file_download
  from huggingface_hub.utils import sha
  storage = os.path.join(cache, file_download.repo_folder_name(repo_id=repo_id, repo_type="model"))
  os.makedirs(os.path.join(storage, "blobs"), exist_ok=True)
  for name in sorted(os.listdir(source_dir)):
    with open(os.path.join(source_dir, name), "rb") as f:
      data = f.read()
    etag = sha.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else sha.git_hash(data)
    blob = os.path.join(storage, "blobs", etag)
    with open(blob, "wb") as f:
      f.write(data)
    pointer = file_download._get_pointer_path(storage, commit, name)
    os.makedirs(os.path.dirname(pointer), exist_ok=True)
    file_download._create_symlink(blob, pointer, new_blob=True)
  file_download._cache_commit_hash_for_specific_revision(storage, "main", commit)
  file_download._create_cachedir_tag(Path(cache))
  scanned = huggingface_hub.scan_cache_dir(cache)
  (repo,) = [r for r in scanned.repos if r.repo_id == repo_id]
  (revision,) = repo.revisions
  assert not scanned.warnings and {f.file_name for f in revision.files} == set(
      os.listdir(source_dir)), scanned.warnings


def shard(directory, parts=2):
  """model.safetensors → model-0000i-of-0000n.safetensors + the index."""
  from safetensors.numpy import load_file, save_file
  sd = load_file(os.path.join(directory, "model.safetensors"))
  os.remove(os.path.join(directory, "model.safetensors"))
  keys, weight_map = sorted(sd), {}
  for i in range(parts):
    name = f"model-{i + 1:05d}-of-{parts:05d}.safetensors"
    part = keys[i::parts]
    save_file({k: sd[k] for k in part}, os.path.join(directory, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in part})
  with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)


@pytest.mark.slow
def test_load_from_the_hub_cache_offline(trained, tmp_path):
  """alip_jax.load('hf-hub:…') in a fresh process with HF_HUB_OFFLINE=1 and
  HF_HUB_CACHE pointing at a cache holding a sharded export."""
  workdir, m = trained
  export = str(tmp_path / "export")
  alip_jax.export(m, export)
  shard(export)
  cache = str(tmp_path / "hub")
  hub_cache(cache, "alip/tiny", export)
  script = ("import sys, numpy as np, alip_jax; m = alip_jax.load(sys.argv[1]); "
            "np.save(sys.argv[2], m.encode_text(sys.argv[3:]))")
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": cache, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "", "PYTHONPATH": os.path.dirname(os.path.dirname(alip_jax.__file__))}
  out = str(tmp_path / "text.npy")
  result = subprocess.run([sys.executable, "-c", script, "hf-hub:alip/tiny", out, *TEXTS],
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  np.testing.assert_allclose(np.load(out), m.encode_text(TEXTS), atol=2e-6)
  missing = subprocess.run([sys.executable, "-c", script, "hf-hub:alip/absent", out], env=env,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode != 0 and "hf-hub:alip/absent: not in the Hugging Face cache" in \
      missing.stderr, missing.stderr[-2000:]


def test_init_from_hub_and_sharded_checkpoints(trained, tmp_path, monkeypatch):
  workdir, m = trained
  export = str(tmp_path / "export")
  alip_jax.export(m, export, format="open_clip")
  hf_export = str(tmp_path / "hf")
  alip_jax.export(m, hf_export)
  shard(hf_export, parts=3)
  cache = str(tmp_path / "hub")
  hub_cache(cache, "alip/tiny-oc", export)
  hub_cache(cache, "alip/tiny-hf", hf_export)
  from huggingface_hub import constants
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  config = tiny_config()
  want = jax.device_get(m.params)
  for name in ("hf-hub:alip/tiny-oc", "hf-hub:alip/tiny-hf", f"hf:{hf_export}", f"open_clip:{export}"):
    config.init_from = name
    model, tokenizer = state_lib.make_model_and_tokenizer(config, data_dir="/nonexistent")
    assert isinstance(tokenizer, Tokenizer) and tokenizer.model_path.endswith("tokenizer.model")
    fresh = jax.tree.map(np.zeros_like, want)
    got = state_lib.imported_params(config, fresh)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
  os.remove(os.path.join(hf_export, "model-00002-of-00003.safetensors"))
  config.init_from = f"hf:{hf_export}"
  with pytest.raises(FileNotFoundError, match="names the shard model-00002-of-00003.safetensors"):
    state_lib.imported_params(config, want)


def test_zoo_aliases():
  for alias, image, text, width in (("ViT-B-32", "B/32", "B", 512), ("ViT-B-16", "B/16", "B", 512),
                                    ("ViT-L-14", "L/14", "L", 768)):
    assert zoo.image_tower(alias) == zoo.image_tower(image)
    assert zoo.text_tower(alias) == zoo.text_tower(text)
    assert zoo.clip_model(alias) == dict(image=image, text=text, embed_dim=width)
    assert zoo.clip_model(image) == zoo.clip_model(alias)
  from configs import alip_yfcc15m
  c = alip_yfcc15m.get_config("ViT-L-14")
  assert (c.model.image, c.model.text, c.model.embed_dim) == ("L/14", "L", 768)
  with pytest.raises(ValueError, match="ViT-B-16"):
    zoo.image_tower("ViT-H-14")


def test_buckets_bound_compilations_and_zero_shot(trained):
  workdir, m = trained
  m = alip_jax.load(workdir)  # fresh jit caches
  assert [m.bucket(n, 256) for n in (1, 8, 9, 100, 256)] == [8, 8, 16, 128, 256]
  assert m.bucket(70, 100) == 100 and m.bucket(3, 4) == 4
  texts = [f"text {i}" for i in range(40)]
  want = m.encode_text(texts)
  for n in (1, 2, 3, 5, 7, 8):
    np.testing.assert_allclose(m.encode_text(texts[:n]), want[:n], atol=2e-6)
  assert m._encode_text._cache_size() == 2  # 40 → 64, and 8 for every size up to 8
  for n in range(9, 17):
    m.encode_text(texts[:n])
  assert m._encode_text._cache_size() == 3
  images = np.stack([np.full((32, 32, 3), 30 * i, np.uint8) for i in range(3)])
  classes, templates = ["red circle", "blue square"], ["a {}.", "a photo of a {}."]
  probs = m.zero_shot(images, classes, templates)
  from alip_jax.evaluation.classification import class_embeddings
  logits = m.logit_scale * m.encode_image(images) @ class_embeddings(m.encode_text, classes,
                                                                     templates).T
  want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  assert probs.shape == (3, 2)
  np.testing.assert_allclose(probs, want, atol=1e-6)
