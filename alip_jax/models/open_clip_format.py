"""open_clip's model directory, both ways: `open_clip_config.json` (its
`model_cfg` + `preprocess_cfg` schema, open_clip 3.x) and
`open_clip_model.safetensors` (OpenAI CLIP's key layout, which open_clip's
`CLIP` class uses: fused q/k/v `in_proj`, `c_fc`/`c_proj`, `visual.proj` and
`text_projection` as [width, embed]).

Our text tower pools at the first EOT, which is not the highest token id of
our SentencePiece vocabulary, so the config says `pool_type='eos'` with our
`eos_id` (open_clip's default, 'argmax', assumes CLIP's BPE). The tokenizer
goes as `tokenizer.json` beside it (`hf_tokenizer_name`): open_clip's
`get_tokenizer('local-dir:…')` then loads it with transformers.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from alip_jax import fileio
from alip_jax.models import clip_weights, openai_weights, transformer, two_towers, zoo

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def state_dict(params) -> dict[str, np.ndarray]:
  """Our (unscanned) params → OpenAI / open_clip CLIP state dict."""
  def blocks(encoder, prefix):
    out = {}
    for i, name in enumerate(sorted(encoder)):
      b, p = encoder[name], f"{prefix}.resblocks.{i}"
      qkv = [b["attn"][n] for n in ("query", "key", "value")]
      out[f"{p}.attn.in_proj_weight"] = np.concatenate(
          [x["kernel"].reshape(x["kernel"].shape[0], -1).T for x in qkv])
      out[f"{p}.attn.in_proj_bias"] = np.concatenate([x["bias"].reshape(-1) for x in qkv])
      k = b["attn"]["out"]["kernel"]
      out[f"{p}.attn.out_proj.weight"] = k.reshape(-1, k.shape[-1]).T
      out[f"{p}.attn.out_proj.bias"] = b["attn"]["out"]["bias"]
      for ln in ("ln_1", "ln_2"):
        out[f"{p}.{ln}.weight"], out[f"{p}.{ln}.bias"] = b[ln]["scale"], b[ln]["bias"]
      for ours, theirs in (("fc", "c_fc"), ("proj", "c_proj")):
        out[f"{p}.mlp.{theirs}.weight"] = b["mlp"][ours]["kernel"].T
        out[f"{p}.mlp.{theirs}.bias"] = b["mlp"][ours]["bias"]
    return out
  im, tx = params["image"], params["text"]
  sd = {"logit_scale": params["logit_scale"],
        "visual.conv1.weight": im["patch_embed"]["kernel"].transpose(3, 2, 0, 1),
        "visual.class_embedding": im["cls_token"], "visual.positional_embedding": im["pos_embedding"],
        "visual.ln_pre.weight": im["ln_pre"]["scale"], "visual.ln_pre.bias": im["ln_pre"]["bias"],
        "visual.ln_post.weight": im["ln_post"]["scale"], "visual.ln_post.bias": im["ln_post"]["bias"],
        "visual.proj": im["proj"]["kernel"],
        "token_embedding.weight": tx["token_embedding"]["embedding"],
        "positional_embedding": tx["pos_embedding"],
        "ln_final.weight": tx["ln_final"]["scale"], "ln_final.bias": tx["ln_final"]["bias"],
        "text_projection": tx["proj"]["kernel"],
        **blocks(im["encoder"], "visual.transformer"), **blocks(tx["encoder"], "transformer")}
  if "logit_bias" in params:  # SigLIP: open_clip's CLIP has one too (init_logit_bias)
    sd["logit_bias"] = params["logit_bias"]
  return {k: np.array(v, np.float32, order="C") for k, v in sd.items()}


def config(model_cfg, vocab_size: int, context_length: int, image_size: int, eot_id: int,
           hf_tokenizer_name: str, logit_bias: float | None = None) -> dict:
  """open_clip_config.json for our model (CLIPVisionCfg / CLIPTextCfg /
  PreprocessCfg field names)."""
  image, text = zoo.image_tower(model_cfg.image), zoo.text_tower(model_cfg.text)
  model = {
      "embed_dim": int(model_cfg.embed_dim),
      "quick_gelu": model_cfg.get("act", "gelu") == "quick_gelu",
      "vision_cfg": {"image_size": int(image_size), "layers": image["depth"],
                     "width": image["width"], "head_width": image["width"] // image["heads"],
                     "patch_size": image["patch_size"]},
      "text_cfg": {"context_length": int(context_length), "vocab_size": int(vocab_size),
                   "width": text["width"], "heads": text["heads"], "layers": text["depth"],
                   "pool_type": "eos", "eos_id": int(eot_id), "pad_id": 0,
                   "hf_tokenizer_name": hf_tokenizer_name}}
  if logit_bias is not None:
    model["init_logit_bias"] = float(logit_bias)
  preprocess = {"size": int(image_size), "mode": "RGB", "mean": list(two_towers.CLIP_MEAN),
                "std": list(two_towers.CLIP_STD), "interpolation": "bicubic",
                "resize_mode": "shortest"}
  return {"model_cfg": model, "preprocess_cfg": preprocess}


def export(params, model_cfg, vocab_size: int, context_length: int, image_size: int,
           directory: str, eot_id: int, hf_tokenizer_name: str) -> None:
  """Writes open_clip_config.json + open_clip_model.safetensors."""
  params = transformer.unstack_layers(clip_weights.jax_to_numpy(params))
  if "domain_log_scale" in params:
    raise ValueError("UniCLIP models (augmentation MLP, domain scales) have no open_clip "
                     "equivalent; export the towers of a CLIP/ALIP-head model")
  bias = float(params["logit_bias"]) if "logit_bias" in params else None
  os.makedirs(directory, exist_ok=True)
  fileio.save_safetensors(state_dict(params), os.path.join(directory, WEIGHTS_FILE))
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config(model_cfg, vocab_size, context_length, image_size, eot_id,
                     hf_tokenizer_name, bias), f, indent=1)


def _set_heads(encoder, heads: int):
  """Re-splits attention kernels for `heads` heads (a reshape: the head
  axis is the outer part of the width axis)."""
  for block in encoder.values():
    attn = block["attn"]
    for n in ("query", "key", "value"):
      k = attn[n]["kernel"]
      attn[n] = {"kernel": k.reshape(k.shape[0], heads, -1), "bias": attn[n]["bias"].reshape(heads, -1)}
    k = attn["out"]["kernel"]
    attn["out"]["kernel"] = k.reshape(heads, -1, k.shape[-1])


def load(directory: str):
  """An open_clip model directory (ours, or any standard-ViT open_clip
  model) → (params, model config, sizes) as `openai_weights.load_openai`."""
  with open(os.path.join(directory, CONFIG_FILE)) as f:
    cfg = json.load(f)["model_cfg"]
  vision, text = cfg["vision_cfg"], cfg["text_cfg"]
  unsupported = {k for k in ("timm_model_name", "hf_model_name") if vision.get(k) or text.get(k)}
  if unsupported or isinstance(vision.get("layers"), (list, tuple)):
    raise ValueError(f"{directory}: only ViT + transformer open_clip models load here "
                     f"(this one has {sorted(unsupported) or 'a ResNet image tower'})")
  weights = next((os.path.join(directory, f) for f in (WEIGHTS_FILE, "open_clip_pytorch_model.bin")
                  if os.path.exists(os.path.join(directory, f))), None)
  if weights is None:
    raise FileNotFoundError(f"{directory} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
  vocab = int(text.get("vocab_size", 49408))
  # 'argmax' pooling (open_clip's default) pools at the highest id: CLIP's EOT.
  eot = int(text["eos_id"]) if text.get("pool_type") == "eos" else vocab - 1
  params, model_cfg, sizes = openai_weights.load_openai(
      weights, act="quick_gelu" if cfg.get("quick_gelu") else "gelu", eot_id=eot,
      head_width=vision.get("head_width", 64))
  text_heads = int(text.get("heads", 8))
  if model_cfg.text.heads != text_heads:
    _set_heads(params["text"]["encoder"], text_heads)
    model_cfg.text.heads = text_heads
  return params, ml_collections.ConfigDict(model_cfg), sizes
