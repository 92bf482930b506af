"""CLIP weights in and out: HF transformers `CLIPModel` directories and
OpenAI / open_clip state dicts → our params, and our params → an HF
`CLIPModel` directory (config.json + model.safetensors).

Layouts (PyTorch → Flax): Linear weight [out, in] → kernel [in, out];
q/k/v [w, w] → [w, heads, head_dim]; out_proj → [heads, head_dim, w];
patch conv [w, 3, p, p] → [p, p, 3, w]. Nothing here needs torch: weights
are read with safetensors; `.bin` / `.pt` files (state dicts, and OpenAI's
TorchScript archives) through models/torch_files.py. Every import is
checked as models/weight_checks.py says.
"""

from __future__ import annotations

import json
import logging
import os

import ml_collections
import numpy as np

from alip_jax import fileio
from alip_jax.models import transformer, weight_checks

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                "open_clip_pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


# ---------------------------------------------------------------- reading

def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A directory (first of WEIGHT_FILES found, else a sharded checkpoint's
  SHARD_INDEXES) or a weights file → numpy arrays."""
  if os.path.isdir(path):
    found = [os.path.join(path, f) for f in WEIGHT_FILES + SHARD_INDEXES
             if os.path.exists(os.path.join(path, f))]
    if not found:
      raise FileNotFoundError(f"{path} holds none of {WEIGHT_FILES + SHARD_INDEXES}")
    if found[0].endswith(".index.json"):
      return read_sharded(found[0])
    path = found[0]
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return load_file(path)
  from alip_jax.models import torch_files  # state dicts and TorchScript archives
  return torch_files.read(path)


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
  """A sharded HF checkpoint (its index maps each weight to a shard file)."""
  with open(index_path) as f:
    weight_map = json.load(f)["weight_map"]
  state = {}
  for shard in sorted(set(weight_map.values())):
    shard_path = os.path.join(os.path.dirname(index_path), shard)
    if not os.path.exists(shard_path):
      raise FileNotFoundError(f"{index_path} names the shard {shard}, which is not there: "
                              f"download every shard of the checkpoint")
    state.update(read_state_dict(shard_path))
  missing = sorted(set(weight_map) - set(state))
  if missing:
    raise ValueError(f"{index_path}: {len(missing)} weights are not in the shards the index "
                     f"names, e.g. {missing[:3]}")
  return state


# ---------------------------------------------------------------- HF CLIPModel

def hf_model_config(hf: dict) -> tuple[ml_collections.ConfigDict, dict]:
  """HF config.json dict → (our model config, dict(vocab_size, context_length,
  image_size))."""
  text, vision = hf["text_config"], hf["vision_config"]
  acts = {text.get("hidden_act", "quick_gelu"), vision.get("hidden_act", "quick_gelu")}
  if len(acts) != 1 or not acts <= {"gelu", "quick_gelu"}:
    raise ValueError(f"unsupported activations {acts}: the towers share one of gelu / quick_gelu")

  def tower(c, **extra):
    if c.get("intermediate_size", 4 * c["hidden_size"]) != 4 * c["hidden_size"]:
      raise ValueError(f"intermediate_size {c['intermediate_size']} != 4 × hidden_size")
    return dict(width=c["hidden_size"], depth=c["num_hidden_layers"],
                heads=c["num_attention_heads"], **extra)

  eos = int(text.get("eos_token_id", 49407))
  if eos == 2:
    # OpenAI's HF configs carry a legacy eos_token_id of 2, and transformers
    # then pools at argmax(input_ids): EOT is the highest id in CLIP's BPE.
    eos = int(text["vocab_size"]) - 1
  model = ml_collections.ConfigDict(dict(
      image=tower(vision, patch_size=vision["patch_size"]), text=tower(text),
      embed_dim=hf.get("projection_dim", 512), dtype="float32", remat="none", scan=False,
      act=acts.pop(), attention="", eot_id=eos))
  return model, dict(vocab_size=text["vocab_size"], context_length=text["max_position_embeddings"],
                     image_size=vision["image_size"])


def attention_in(weight, bias, heads):
  """Torch q/k/v Linear → DenseGeneral kernel [w, heads, hd], bias [heads, hd]."""
  width = weight.shape[1]
  return {"kernel": weight.T.reshape(width, heads, -1), "bias": bias.reshape(heads, -1)}


def attention_out(weight, bias, heads):
  """Torch out_proj Linear → DenseGeneral kernel [heads, hd, w], bias [w]."""
  width = weight.shape[0]
  return {"kernel": weight.T.reshape(heads, -1, width), "bias": bias}


def layer_norm(sd, name):
  """Torch LayerNorm `name` → Flax {scale, bias}."""
  return {"scale": sd[f"{name}.weight"], "bias": sd[f"{name}.bias"]}


def _hf_blocks(sd, prefix, depth, heads):
  blocks = {}
  for i in range(depth):
    p = f"{prefix}.encoder.layers.{i}"
    attn = {n: attention_in(sd[f"{p}.self_attn.{t}_proj.weight"],
                            sd[f"{p}.self_attn.{t}_proj.bias"], heads)
            for n, t in (("query", "q"), ("key", "k"), ("value", "v"))}
    attn["out"] = attention_out(sd[f"{p}.self_attn.out_proj.weight"],
                                sd[f"{p}.self_attn.out_proj.bias"], heads)
    blocks[f"block{i:02d}"] = {
        "ln_1": layer_norm(sd, f"{p}.layer_norm1"), "attn": attn,
        "ln_2": layer_norm(sd, f"{p}.layer_norm2"),
        "mlp": {"fc": {"kernel": sd[f"{p}.mlp.fc1.weight"].T, "bias": sd[f"{p}.mlp.fc1.bias"]},
                "proj": {"kernel": sd[f"{p}.mlp.fc2.weight"].T, "bias": sd[f"{p}.mlp.fc2.bias"]}}}
  return blocks


def params_from_hf(sd: dict, model_cfg) -> dict:
  """HF CLIPModel state dict → our (unscanned) params."""
  image, text = model_cfg.image, model_cfg.text
  v, t = "vision_model", "text_model"
  return {
      "logit_scale": np.asarray(sd["logit_scale"], np.float32).reshape(()),
      "image": {
          "patch_embed": {"kernel": sd[f"{v}.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)},
          "cls_token": sd[f"{v}.embeddings.class_embedding"],
          "pos_embedding": sd[f"{v}.embeddings.position_embedding.weight"],
          "ln_pre": layer_norm(sd, f"{v}.pre_layrnorm"),
          "encoder": _hf_blocks(sd, v, image.depth, image.heads),
          "ln_post": layer_norm(sd, f"{v}.post_layernorm"),
          "proj": {"kernel": sd["visual_projection.weight"].T}},
      "text": {
          "token_embedding": {"embedding": sd[f"{t}.embeddings.token_embedding.weight"]},
          "pos_embedding": sd[f"{t}.embeddings.position_embedding.weight"],
          "encoder": _hf_blocks(sd, t, text.depth, text.heads),
          "ln_final": layer_norm(sd, f"{t}.final_layer_norm"),
          "proj": {"kernel": sd["text_projection.weight"].T}},
  }


def load_hf(directory: str, strict: bool = True):
  """An HF CLIPModel directory → (params, model config, dict(vocab_size,
  context_length, image_size)), checked as models/weight_checks.py says;
  `strict=False` skips (and prints) tensors that have no place."""
  with open(os.path.join(directory, "config.json")) as f:
    hf = json.load(f)
  model_cfg, sizes = hf_model_config(hf)
  sd = weight_checks.TrackedStateDict(read_state_dict(directory), directory)
  for tower, key in (("vision", "vision_model"), ("text", "text_model")):
    weight_checks.check_depth(sd, rf"{key}\.encoder\.layers\.(\d+)\.",
                              hf[f"{tower}_config"]["num_hidden_layers"],
                              f"{directory}/config.json {tower}_config.num_hidden_layers", directory)
  params = params_from_hf(sd, model_cfg)
  weight_checks.check_consumed(sd, strict)
  weight_checks.check_filled(params, model_cfg, sizes, directory)
  return params, model_cfg, sizes


def _to_hf_blocks(encoder, prefix):
  out = {}
  for i, name in enumerate(sorted(encoder)):
    b, p = encoder[name], f"{prefix}.encoder.layers.{i}"
    for n, t in (("query", "q"), ("key", "k"), ("value", "v")):
      k = b["attn"][n]["kernel"]
      out[f"{p}.self_attn.{t}_proj.weight"] = k.reshape(k.shape[0], -1).T
      out[f"{p}.self_attn.{t}_proj.bias"] = b["attn"][n]["bias"].reshape(-1)
    k = b["attn"]["out"]["kernel"]
    out[f"{p}.self_attn.out_proj.weight"] = k.reshape(-1, k.shape[-1]).T
    out[f"{p}.self_attn.out_proj.bias"] = b["attn"]["out"]["bias"]
    for ours, theirs in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2")):
      out[f"{p}.{theirs}.weight"], out[f"{p}.{theirs}.bias"] = b[ours]["scale"], b[ours]["bias"]
    for ours, theirs in (("fc", "fc1"), ("proj", "fc2")):
      out[f"{p}.mlp.{theirs}.weight"] = b["mlp"][ours]["kernel"].T
      out[f"{p}.mlp.{theirs}.bias"] = b["mlp"][ours]["bias"]
  return out


def export_hf(params, model_cfg, vocab_size: int, context_length: int, image_size: int,
              directory: str, eot_id: int | None = None) -> None:
  """Writes our params as an HF `CLIPModel` directory (config.json +
  model.safetensors) that `CLIPModel.from_pretrained(directory)` loads.
  `eot_id` (the tokenizer's; default `model.eot_id` or 3) becomes HF's
  eos_token_id, where the text tower pools; SOT is taken as eot_id − 1."""
  params = transformer.unstack_layers(jax_to_numpy(params))
  if "domain_log_scale" in params:
    raise ValueError("UniCLIP models (augmentation MLP, domain scales) have no CLIPModel "
                     "equivalent; export the towers of a CLIP/ALIP-head model")
  if "logit_bias" in params:
    log.warning("CLIPModel has no logit bias: the SigLIP bias %.3f is not exported",
                float(params["logit_bias"]))
  from alip_jax.models import zoo
  image, text = zoo.image_tower(model_cfg.image), zoo.text_tower(model_cfg.text)
  im, tx = params["image"], params["text"]
  v, t = "vision_model", "text_model"
  sd = {
      "logit_scale": np.asarray(params["logit_scale"]).reshape(()),
      f"{v}.embeddings.patch_embedding.weight": im["patch_embed"]["kernel"].transpose(3, 2, 0, 1),
      f"{v}.embeddings.class_embedding": im["cls_token"],
      f"{v}.embeddings.position_embedding.weight": im["pos_embedding"],
      f"{v}.pre_layrnorm.weight": im["ln_pre"]["scale"], f"{v}.pre_layrnorm.bias": im["ln_pre"]["bias"],
      f"{v}.post_layernorm.weight": im["ln_post"]["scale"],
      f"{v}.post_layernorm.bias": im["ln_post"]["bias"],
      "visual_projection.weight": im["proj"]["kernel"].T,
      f"{t}.embeddings.token_embedding.weight": tx["token_embedding"]["embedding"],
      f"{t}.embeddings.position_embedding.weight": tx["pos_embedding"],
      f"{t}.final_layer_norm.weight": tx["ln_final"]["scale"],
      f"{t}.final_layer_norm.bias": tx["ln_final"]["bias"],
      "text_projection.weight": tx["proj"]["kernel"].T,
      **_to_hf_blocks(im["encoder"], v), **_to_hf_blocks(tx["encoder"], t)}
  act = model_cfg.get("act", "gelu")
  eot = int(eot_id if eot_id is not None else model_cfg.get("eot_id", 3))
  config = {
      "architectures": ["CLIPModel"], "model_type": "clip",
      "projection_dim": int(model_cfg.embed_dim),
      "logit_scale_init_value": float(np.asarray(params["logit_scale"])),
      "text_config": dict(
          vocab_size=int(vocab_size), hidden_size=text["width"], intermediate_size=4 * text["width"],
          num_hidden_layers=text["depth"], num_attention_heads=text["heads"],
          max_position_embeddings=int(context_length), hidden_act=act, layer_norm_eps=transformer.LN_EPS,
          projection_dim=int(model_cfg.embed_dim), bos_token_id=eot - 1, eos_token_id=eot,
          pad_token_id=0),
      "vision_config": dict(
          hidden_size=image["width"], intermediate_size=4 * image["width"],
          num_hidden_layers=image["depth"], num_attention_heads=image["heads"],
          image_size=int(image_size), patch_size=image["patch_size"], num_channels=3,
          hidden_act=act, layer_norm_eps=transformer.LN_EPS, projection_dim=int(model_cfg.embed_dim)),
  }
  os.makedirs(directory, exist_ok=True)
  fileio.save_safetensors({k: np.array(x, np.float32, order="C") for k, x in sd.items()},
                          os.path.join(directory, "model.safetensors"))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=1)


def jax_to_numpy(tree):
  import jax
  return jax.tree.map(lambda x: np.asarray(x, np.float32), tree)
