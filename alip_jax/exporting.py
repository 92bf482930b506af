"""`alip_jax.export(model, dir, format=...)`: a loaded model as a directory
that transformers or open_clip load unchanged.

  m = alip_jax.load("/runs/alip_b32")
  alip_jax.export(m, "/out/alip_b32_hf")                        # transformers
  alip_jax.export(m, "/out/alip_b32_oc", format="open_clip")    # open_clip

format='hf': config.json + model.safetensors (a `CLIPModel`),
preprocessor_config.json (the resize, crop, mean and std of our evaluation
preprocessing at the model's image size), the tokenizer as tokenizer.json +
tokenizer_config.json (our SentencePiece model converted:
alip_jax/data/tokenizer_json.py), so that `AutoProcessor.from_pretrained(dir)`
and `pipeline('zero-shot-image-classification', model=dir)` work.
format='open_clip': open_clip_config.json + open_clip_model.safetensors
(alip_jax/models/open_clip_format.py), the same tokenizer files and a
config.json for transformers' AutoTokenizer (TOKENIZER_ONLY_CONFIG), for
`open_clip.create_model_and_transforms('local-dir:DIR' or 'hf-hub:ORG/NAME')`
and `open_clip.get_tokenizer(…)` (offline from a Hub cache too).
Both also hold tokenizer.model (what `alip_jax.load` reads back exactly) and
a model card, README.md, filled from the training config and eval.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import numpy as np

from alip_jax import losses, rundir
from alip_jax.data import tokenizer_json
from alip_jax.models import clip_weights, open_clip_format, two_towers, zoo

FORMATS = ("hf", "open_clip")
# The open_clip export's config.json. open_clip's get_tokenizer('hf-hub:…')
# loads the tokenizer with transformers' AutoTokenizer, which reads the repo's
# config.json first; offline, a repo without one fails. No model_type: the
# directory is not a transformers model (alip_jax.hub.directory_kind).
TOKENIZER_ONLY_CONFIG = {
    "library_name": "open_clip", "tokenizer_class": "PreTrainedTokenizerFast",
    "description": "An open_clip model (open_clip_config.json, open_clip_model.safetensors) "
                   "exported by alip_jax; this file lets transformers' AutoTokenizer load "
                   "tokenizer.json from a Hub cache offline."}
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def export(loaded, directory: str, format: str = "hf", repo_id: str | None = None) -> None:
  """Writes `loaded` (an `alip_jax.LoadedModel`) to `directory` (see the
  module docstring). `repo_id` ('org/name'), where you mean to upload it,
  goes into the model card and into open_clip's `hf_tokenizer_name`."""
  if format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
  os.makedirs(directory, exist_ok=True)
  params = jax.device_get(loaded.params)
  tok, eot = loaded.tokenizer, int(loaded.model.text.eot_id)
  sizes = (tok.vocab_size, tok.context_length, loaded.image_size)
  if format == "hf":
    clip_weights.export_hf(params, loaded.model_config, *sizes, directory, eot_id=eot)
    with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
      json.dump(preprocessor_config(loaded.image_size), f, indent=1)
  else:
    name = repo_id or os.path.basename(os.path.abspath(directory))
    open_clip_format.export(params, loaded.model_config, *sizes, directory, eot, name)
    with open(os.path.join(directory, "config.json"), "w") as f:
      json.dump(TOKENIZER_ONLY_CONFIG, f, indent=1)
  _write_tokenizer(tok, directory)
  with open(os.path.join(directory, "README.md"), "w") as f:
    f.write(model_card(loaded, format, repo_id))


def preprocessing_contract(size: int, format: str) -> list[str]:
  """The model card's preprocessing section: our evaluation preprocessing
  (web.to_rgb + pipeline.eval_image + normalisation) and how each tool gets
  the same pixels (README, "One preprocessing contract")."""
  lines = [
      "Images (`alip_jax.load(...).preprocess`):", "",
      "1. Decoded upright (EXIF orientation), transparency composited onto white, RGB.",
      f"2. Shorter side resized to {size} px, the longer to int({size} × long / short), "
      f"PIL bicubic.",
      f"3. Centre crop {size}×{size} at offset floor((side − {size}) / 2).",
      f"4. Scaled to [0, 1], normalised with mean {list(two_towers.CLIP_MEAN)} and std "
      f"{list(two_towers.CLIP_STD)}.", ""]
  if format == "hf":
    return lines + [
        '`AutoProcessor.from_pretrained(DIR, backend="pil")` gives these pixels exactly; '
        "with torchvision installed its default is the torchvision image processor, which "
        "resizes with other kernels (about one grey level apart). The zero-shot pipeline drops "
        "transparency (`convert(\"RGB\")`): give it RGB images, transparency composited onto "
        "white, to get our numbers."]
  return lines + [
      "open_clip's `preprocess` differs in two ways: it drops transparency (give it RGB "
      "images, composited onto white), and its centre crop rounds the offset (half to even), "
      f"a one-pixel shift where (resized side − {size}) mod 4 = 3. For our numbers exactly, "
      "take the crop from alip_jax (`alip_jax.load(DIR).preprocess(path)`, uint8): open_clip's "
      "`preprocess` of that square image only normalises it."]


def preprocessor_config(image_size: int) -> dict:
  """transformers' CLIPImageProcessor set to our evaluation preprocessing
  (`pipeline.eval_image` + `two_towers.normalize_images`)."""
  from alip_jax.data.pipeline import EVAL_RESAMPLE
  return {
      "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
      "do_convert_rgb": True, "do_resize": True, "size": {"shortest_edge": int(image_size)},
      "resample": int(EVAL_RESAMPLE), "do_center_crop": True,
      "crop_size": {"height": int(image_size), "width": int(image_size)},
      "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
      "image_mean": list(two_towers.CLIP_MEAN), "image_std": list(two_towers.CLIP_STD)}


def _write_tokenizer(tok, directory):
  """Our SentencePiece model: converted to tokenizer.json (+ configs) and
  copied as is. A tokenizer.json (weights imported from transformers):
  copied with the transformers files beside it."""
  if hasattr(tok, "model_path"):
    tokenizer_json.write_hf_tokenizer(tok.model_path, tok.context_length, directory)
    shutil.copy(tok.model_path, os.path.join(directory, "tokenizer.model"))
    return
  source_dir = os.path.dirname(tok.tokenizer_json)
  for name in HF_TOKENIZER_FILES:
    if os.path.exists(os.path.join(source_dir, name)):
      shutil.copy(os.path.join(source_dir, name), os.path.join(directory, name))


# ---------------------------------------------------------------- model card

def _eval_results(loaded) -> tuple[int | None, dict]:
  """(step, metrics) from the workdir's eval.json: the loaded step's entry,
  else the newest one before it."""
  if not loaded.source or loaded.config is None:
    return None, {}
  evals = rundir.read_eval_log(loaded.source)
  steps = sorted(int(s) for s in evals if loaded.step is None or int(s) <= loaded.step)
  return (steps[-1], evals[str(steps[-1])]) if steps else (None, {})


def _metric_rows(metrics: dict) -> list[str]:
  rows = []
  for name, value in sorted(metrics.items()):
    if not isinstance(value, (int, float)):
      continue
    percent = isinstance(value, float) and any(
        k in name for k in ("R@", "top", "accuracy", "per_class"))
    rows.append(f"| {name} | {100 * value:.2f} % |" if percent else f"| {name} | {value:.4g} |")
  return rows


def model_card(loaded, format: str, repo_id: str | None = None) -> str:
  """README.md of an export: architecture, training, evaluation, use."""
  cfg, config = loaded.model_config, loaded.config
  image, text = zoo.image_tower(cfg.image), zoo.text_tower(cfg.text)
  tok = loaded.tokenizer
  num_params = sum(math.prod(np.shape(x)) for x in jax.tree.leaves(loaded.params))
  source = str(loaded.source)
  source = source if source.startswith("hf-hub:") else os.path.basename(source.rstrip("/"))
  lines = ["---", f"library_name: {'transformers' if format == 'hf' else 'open_clip'}",
           "pipeline_tag: zero-shot-image-classification",
           "tags: [clip, alip, alip_jax, zero-shot-image-classification]", "---", "",
           f"# {repo_id or 'alip_jax model'}", "",
           f"A CLIP-style image–text dual encoder trained with alip_jax, exported from "
           f"`{source}`" + (f" at step {loaded.step}" if loaded.step is not None else "")
           + f" in {'transformers CLIPModel' if format == 'hf' else 'open_clip'} format.", "",
           "## Model", "", "| | image tower | text tower |", "|---|---|---|",
           f"| width | {image['width']} | {text['width']} |",
           f"| layers | {image['depth']} | {text['depth']} |",
           f"| heads | {image['heads']} | {text['heads']} |",
           f"| input | {loaded.image_size}×{loaded.image_size} px, patch {image['patch_size']} "
           f"| {tok.context_length} tokens, vocabulary {tok.vocab_size} |", "",
           f"Joint embedding width {cfg.embed_dim}, activation {cfg.get('act', 'gelu')}, "
           f"{num_params / 1e6:.2f} M parameters, logit scale {loaded.logit_scale:.2f}.", ""]
  lines += ["## Training", ""]
  if config is None:
    lines += [f"Weights imported from `{source}`; their training is not recorded here.", ""]
  else:
    data = os.path.basename(str(config.data.dir).rstrip("/")) or "the embedded synthetic corpus"
    lines += [f"- loss: {losses.get(config.loss).description}",
              f"- steps: {config.train.steps}, global batch {config.train.batch_size}",
              f"- optimiser: AdamW, lr {config.optim.lr}, schedule {config.optim.schedule}, "
              f"weight decay {config.optim.weight_decay}",
              f"- data: `{data}`, "
              f"images {config.data.image_size} px, text {config.data.context_length} tokens",
              f"- seed {config.seed}; the whole config is `config.json` of the training workdir", ""]
  step, metrics = _eval_results(loaded)
  lines += ["## Evaluation", ""]
  rows = _metric_rows(metrics)
  if rows:
    lines += [f"From the run's eval.json at step {step}:", "", "| metric | value |", "|---|---|",
              *rows, ""]
  else:
    lines += ["No evaluation recorded with these weights (`python -m alip_jax.evaluate` "
              "measures retrieval and zero-shot accuracy).", ""]
  load_name = repo_id or "DIR"
  if format == "hf":
    use = ["```python", "from transformers import pipeline",
           f'classify = pipeline("zero-shot-image-classification", model="{load_name}")',
           'classify("cat.jpg", candidate_labels=["a cat", "a dog"])', "```"]
  else:
    prefix = f"hf-hub:{repo_id}" if repo_id else "local-dir:DIR"
    use = ["```python", "import open_clip",
           f'model, _, preprocess = open_clip.create_model_and_transforms("{prefix}")',
           f'tokenizer = open_clip.get_tokenizer("{prefix}")', "```"]
  lines += ["## Use", "", *use, "",
            f"In alip_jax: `alip_jax.load(\"{('hf-hub:' + repo_id) if repo_id else 'DIR'}\")`.", "",
            "## Preprocessing and tokenization", "",
            *preprocessing_contract(loaded.image_size, format), ""]
  if hasattr(tok, "model_path"):
    lines += [f"Text: a SentencePiece unigram model (tokenizer.model; tokenizer.json is the same "
              f"model for transformers), rows of {tok.context_length} ids: <s> (2), the pieces, "
              f"</s> (3), padding <pad> (0); the text tower pools at the first </s>. Known "
              f"difference of the transformers tokenizer: a combining mark after a character the "
              f"NFKC normaliser rewrites (decomposed, non-NFC text) can tokenize differently "
              f"(huggingface/tokenizers#2116), and the special pieces written literally in a text "
              f"become special tokens. open_clip also collapses whitespace and fixes mojibake "
              f"(ftfy) before tokenizing.", ""]
  return "\n".join(lines)
