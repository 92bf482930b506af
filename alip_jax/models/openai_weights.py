"""OpenAI CLIP / open_clip ViT state dicts (`.pt`, `.bin`, `.safetensors`;
TorchScript archives too) → our params. The layouts are those of
models/clip_weights.py (HF), with fused q/k/v and `c_fc`/`c_proj` names;
every import is checked as models/weight_checks.py says."""

from __future__ import annotations

import ml_collections
import numpy as np

from alip_jax.models import clip_weights, weight_checks
from alip_jax.models.clip_weights import attention_in, attention_out, layer_norm


def _blocks(sd, prefix, heads):
  head = f"{prefix}.resblocks."
  depth = len({k[len(head):].split(".")[0] for k in sd if k.startswith(head)})
  blocks = {}
  for i in range(depth):
    p = f"{prefix}.resblocks.{i}"
    qkv_w = np.split(sd[f"{p}.attn.in_proj_weight"], 3)
    qkv_b = np.split(sd[f"{p}.attn.in_proj_bias"], 3)
    attn = {n: attention_in(w, b, heads) for n, w, b in zip(("query", "key", "value"), qkv_w, qkv_b)}
    attn["out"] = attention_out(sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"], heads)
    blocks[f"block{i:02d}"] = {
        "ln_1": layer_norm(sd, f"{p}.ln_1"), "attn": attn, "ln_2": layer_norm(sd, f"{p}.ln_2"),
        "mlp": {"fc": {"kernel": sd[f"{p}.mlp.c_fc.weight"].T, "bias": sd[f"{p}.mlp.c_fc.bias"]},
                "proj": {"kernel": sd[f"{p}.mlp.c_proj.weight"].T, "bias": sd[f"{p}.mlp.c_proj.bias"]}}}
  return blocks, depth


def load_openai(path: str, act: str = "quick_gelu", eot_id: int = 49407, head_width: int = 64,
                strict: bool = True):
  """An OpenAI CLIP / open_clip ViT state dict (file or directory) → (params,
  model config, sizes). Sizes are read off the shapes, as open_clip's
  `build_model_from_openai_state_dict` does; heads = width / `head_width`
  (64 in every OpenAI and open_clip ViT). OpenAI weights use QuickGELU;
  open_clip's non-OpenAI models (and ALIP) use GELU: pass `act`."""
  sd = weight_checks.TrackedStateDict(clip_weights.read_state_dict(path), path)
  width = sd["visual.conv1.weight"].shape[0]
  patch = sd["visual.conv1.weight"].shape[-1]
  grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
  text_width = sd["ln_final.weight"].shape[0]
  image_blocks, image_depth = _blocks(sd, "visual.transformer", width // head_width)
  text_blocks, text_depth = _blocks(sd, "transformer", text_width // head_width)
  model_cfg = ml_collections.ConfigDict(dict(
      image=dict(patch_size=patch, width=width, depth=image_depth, heads=width // head_width),
      text=dict(width=text_width, depth=text_depth, heads=text_width // head_width),
      embed_dim=sd["text_projection"].shape[1], dtype="float32", remat="none", scan=False,
      act=act, attention="", eot_id=eot_id))
  params = {
      "logit_scale": np.asarray(sd["logit_scale"], np.float32).reshape(()),
      "image": {
          "patch_embed": {"kernel": sd["visual.conv1.weight"].transpose(2, 3, 1, 0)},
          "cls_token": sd["visual.class_embedding"],
          "pos_embedding": sd["visual.positional_embedding"],
          "ln_pre": layer_norm(sd, "visual.ln_pre"), "encoder": image_blocks,
          "ln_post": layer_norm(sd, "visual.ln_post"),
          "proj": {"kernel": sd["visual.proj"]}},  # already [width, embed]
      "text": {
          "token_embedding": {"embedding": sd["token_embedding.weight"]},
          "pos_embedding": sd["positional_embedding"],
          "encoder": text_blocks, "ln_final": layer_norm(sd, "ln_final"),
          "proj": {"kernel": sd["text_projection"]}},
  }
  if "logit_bias" in sd:  # a SigLIP head (open_clip's SigLIP models, our SigLIP exports)
    params["logit_bias"] = np.asarray(sd["logit_bias"], np.float32).reshape(())
  sizes = dict(vocab_size=sd["token_embedding.weight"].shape[0],
               context_length=sd["positional_embedding"].shape[0], image_size=grid * patch)
  weight_checks.check_consumed(sd, strict)
  weight_checks.check_filled(params, model_cfg, sizes, path)
  return params, model_cfg, sizes
