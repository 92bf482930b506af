"""The other side of the HF parity tests: transformers' own CLIPModel in torch.

Runs in a separate interpreter (ALIP_TORCH_PYTHON; tests/run.sh makes a
Python 3.11 venv with torch's CPU build and transformers), because the
project's venv has no torch. Nothing is downloaded.

  python torch_reference.py make DIR inputs.npz ACT   # random CLIPModel → DIR, outputs → DIR/ref.npz
  python torch_reference.py check DIR inputs.npz      # load DIR (our export), print outputs as JSON
  python torch_reference.py processor DIR request.json out.npz   # AutoProcessor + pipeline on DIR
  python torch_reference.py open_clip DIR inputs.npz out.npz     # DIR in open_clip's layout
"""

import json
import sys

import numpy as np
import torch
import transformers
from transformers import CLIPConfig, CLIPModel


def outputs(model, inputs):
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(inputs["input_ids"]).long(),
                pixel_values=torch.from_numpy(inputs["pixel_values"]))
  return {"image_embeds": out.image_embeds.numpy(), "text_embeds": out.text_embeds.numpy(),
          "logits_per_image": out.logits_per_image.numpy()}


def make(directory, inputs_path, act):
  inputs = dict(np.load(inputs_path))
  torch.manual_seed(0)
  size = inputs["pixel_values"].shape[-1]
  text = dict(vocab_size=int(inputs["vocab_size"]), hidden_size=32, intermediate_size=128,
              num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=inputs["input_ids"].shape[1], hidden_act=act,
              bos_token_id=int(inputs["sot_id"]), eos_token_id=int(inputs["eot_id"]), pad_token_id=0)
  vision = dict(hidden_size=48, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                image_size=size, patch_size=8, hidden_act=act)
  model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24,
                               logit_scale_init_value=2.3)).eval()
  with torch.no_grad():  # non-trivial norms and biases, so a layout slip shows
    for name, p in model.named_parameters():
      if name.endswith(("bias", "layer_norm1.weight", "layer_norm2.weight", "layrnorm.weight",
                        "layernorm.weight", "final_layer_norm.weight")):
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(directory)  # config.json + model.safetensors
  np.savez(f"{directory}/ref.npz", **outputs(model, inputs))


def check(directory, inputs_path):
  transformers.logging.set_verbosity_warning()
  model, info = CLIPModel.from_pretrained(directory, output_loading_info=True)
  inputs = dict(np.load(inputs_path))
  out = outputs(model.eval(), inputs)
  print(json.dumps({
      "loading_info": {k: sorted(map(str, v)) for k, v in info.items()},
      **{k: v.tolist() for k, v in out.items()}}))


def processor(directory, request_path, out_path):
  """Our HF export through transformers' own entry points, on image files:
  AutoProcessor (image processor + tokenizer), CLIPModel on what it gives,
  and the zero-shot-image-classification pipeline."""
  from PIL import Image
  from transformers import AutoProcessor, pipeline
  transformers.logging.set_verbosity_error()
  request = json.loads(open(request_path).read())
  proc = AutoProcessor.from_pretrained(directory)
  images = [Image.open(p) for p in request["images"]]
  inputs = proc(images=images, text=request["texts"], return_tensors="pt",
                padding="max_length", truncation=True)
  model = CLIPModel.from_pretrained(directory).eval()
  with torch.no_grad():
    out = model(**inputs)
  classify = pipeline("zero-shot-image-classification", model=directory)
  result = classify(request["images"][0], candidate_labels=request["labels"])
  scores = {r["label"]: r["score"] for r in result}
  np.savez(out_path, pixel_values=inputs["pixel_values"].numpy(),
           input_ids=inputs["input_ids"].numpy(), image_embeds=out.image_embeds.numpy(),
           text_embeds=out.text_embeds.numpy(),
           pipeline_scores=np.array([scores[label] for label in request["labels"]]),
           classes=np.array([type(proc).__name__, type(proc.image_processor).__name__,
                             type(proc.tokenizer).__name__]))


# open_clip 3.3.0's config fields (model.py CLIPVisionCfg / CLIPTextCfg, the
# CLIP constructor, transform.py PreprocessCfg), for when it is not installed.
OPEN_CLIP_FIELDS = {
    "model_cfg": {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale",
                  "init_logit_bias", "nonscalar_logit_scale", "cast_dtype", "output_dict",
                  "custom_text"},
    "vision_cfg": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size",
                   "ls_init_value", "patch_dropout", "attentional_pool", "attn_pooler_queries",
                   "attn_pooler_heads", "no_ln_pre", "pos_embed_type", "final_ln_after_pool",
                   "pool_type", "output_tokens", "act_kwargs", "norm_kwargs", "block_type",
                   "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner",
                   "scale_attn", "scale_fc", "timm_model_name", "timm_model_pretrained",
                   "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"},
    "text_cfg": {"context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_mode",
                 "tokenizer_kwargs", "width", "heads", "layers", "mlp_ratio", "ls_init_value",
                 "embed_cls", "pad_id", "eos_id", "no_causal_mask", "final_ln_after_pool",
                 "pool_type", "proj_bias", "proj_type", "output_tokens", "act_kwargs",
                 "norm_kwargs", "block_type", "qk_norm", "scaled_cosine_attn", "scale_heads",
                 "scale_attn_inner", "scale_attn", "scale_fc", "hf_model_name",
                 "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"},
    "preprocess_cfg": {"size", "mode", "mean", "std", "interpolation", "resize_mode",
                       "fill_color"},
}


class _QuickGELU(torch.nn.Module):
  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


class _Block(torch.nn.Module):
  """open_clip's ResidualAttentionBlock, with its parameter names."""

  def __init__(self, width, heads, act):
    super().__init__()
    from collections import OrderedDict
    self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
    self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    self.mlp = torch.nn.Sequential(OrderedDict(
        c_fc=torch.nn.Linear(width, 4 * width), gelu=act(), c_proj=torch.nn.Linear(4 * width, width)))

  def forward(self, x, mask=None):
    y = self.ln_1(x)
    x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
    return x + self.mlp(self.ln_2(x))


class _Tower(torch.nn.Module):
  def __init__(self, width, heads, layers, act):
    super().__init__()
    self.resblocks = torch.nn.ModuleList([_Block(width, heads, act) for _ in range(layers)])

  def forward(self, x, mask=None):
    for block in self.resblocks:
      x = block(x, mask)
    return x


class OpenClipLayout(torch.nn.Module):
  """open_clip's CLIP (ViT image tower, transformer text tower), written
  from its config fields and parameter names: `load_state_dict(strict=True)`
  checks the export's keys and shapes, `forward` its layout."""

  def __init__(self, cfg):
    super().__init__()
    m = cfg["model_cfg"]
    v, t = m["vision_cfg"], m["text_cfg"]
    act = _QuickGELU if m.get("quick_gelu") else torch.nn.GELU
    w, p, grid = v["width"], v["patch_size"], v["image_size"] // v["patch_size"]
    self.visual = torch.nn.Module()
    self.visual.conv1 = torch.nn.Conv2d(3, w, p, p, bias=False)
    self.visual.class_embedding = torch.nn.Parameter(torch.zeros(w))
    self.visual.positional_embedding = torch.nn.Parameter(torch.zeros(grid * grid + 1, w))
    self.visual.ln_pre, self.visual.ln_post = torch.nn.LayerNorm(w), torch.nn.LayerNorm(w)
    self.visual.transformer = _Tower(w, w // v.get("head_width", 64), v["layers"], act)
    self.visual.proj = torch.nn.Parameter(torch.zeros(w, m["embed_dim"]))
    tw, length = t["width"], t["context_length"]
    self.token_embedding = torch.nn.Embedding(t["vocab_size"], tw)
    self.positional_embedding = torch.nn.Parameter(torch.zeros(length, tw))
    self.transformer = _Tower(tw, t["heads"], t["layers"], act)
    self.ln_final = torch.nn.LayerNorm(tw)
    self.text_projection = torch.nn.Parameter(torch.zeros(tw, m["embed_dim"]))
    self.logit_scale = torch.nn.Parameter(torch.zeros(()))
    if m.get("init_logit_bias") is not None:
      self.logit_bias = torch.nn.Parameter(torch.zeros(()))
    self.register_buffer("attn_mask", torch.full((length, length), float("-inf")).triu(1),
                         persistent=False)
    self.pool_type, self.eos_id = t.get("pool_type", "argmax"), t.get("eos_id", 2)

  def encode_image(self, x):
    v = self.visual
    x = v.conv1(x).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + v.positional_embedding
    x = v.ln_post(v.transformer(v.ln_pre(x)))
    return torch.nn.functional.normalize(x[:, 0] @ v.proj, dim=-1)

  def encode_text(self, text):
    x = self.transformer(self.token_embedding(text) + self.positional_embedding, self.attn_mask)
    x = self.ln_final(x)
    idx = (text == self.eos_id).int().argmax(-1) if self.pool_type == "eos" else text.argmax(-1)
    return torch.nn.functional.normalize(x[torch.arange(len(x)), idx] @ self.text_projection, dim=-1)


def open_clip_check(directory, inputs_path, out_path):
  """DIR (our open_clip export) through open_clip itself when it is
  installed, and always through OpenClipLayout (see above)."""
  from safetensors.torch import load_file
  cfg = json.loads(open(f"{directory}/open_clip_config.json").read())
  fields = OPEN_CLIP_FIELDS
  try:
    import dataclasses
    import open_clip
    from open_clip import model as oc_model, transform as oc_transform
    fields = {**fields, "vision_cfg": {f.name for f in dataclasses.fields(oc_model.CLIPVisionCfg)},
              "text_cfg": {f.name for f in dataclasses.fields(oc_model.CLIPTextCfg)},
              "preprocess_cfg": {f.name for f in dataclasses.fields(oc_transform.PreprocessCfg)}}
    open_clip_status = f"open_clip {open_clip.__version__}"
  except Exception as e:  # not installed, or its torchvision does not load
    open_clip, open_clip_status = None, f"open_clip not usable here: {type(e).__name__}: {e}"
  unknown = {section: sorted(set(values) - fields[section])
             for section, values in (("model_cfg", cfg["model_cfg"]),
                                     ("vision_cfg", cfg["model_cfg"]["vision_cfg"]),
                                     ("text_cfg", cfg["model_cfg"]["text_cfg"]),
                                     ("preprocess_cfg", cfg["preprocess_cfg"]))}
  inputs = dict(np.load(inputs_path))
  pixels = torch.from_numpy(inputs["pixel_values"])
  tokens = torch.from_numpy(inputs["input_ids"]).long()
  layout = OpenClipLayout(cfg).eval()
  layout.load_state_dict(load_file(f"{directory}/open_clip_model.safetensors"), strict=True)
  results = {}
  with torch.no_grad():
    results["layout_image"], results["layout_text"] = (
        layout.encode_image(pixels).numpy(), layout.encode_text(tokens).numpy())
    if open_clip is not None:
      model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{directory}")
      tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
      model.eval()
      results["open_clip_image"] = model.encode_image(pixels, normalize=True).numpy()
      results["open_clip_text"] = model.encode_text(tokens, normalize=True).numpy()
      results["open_clip_tokens"] = tokenizer(list(inputs["texts"])).numpy()
  np.savez(out_path, **results, status=np.array(open_clip_status),
           unknown_fields=np.array(json.dumps(unknown)))


if __name__ == "__main__":
  commands = {"make": (make, 3), "check": (check, 2), "processor": (processor, 3),
              "open_clip": (open_clip_check, 3)}
  if len(sys.argv) < 2 or sys.argv[1] not in commands:
    raise SystemExit(__doc__)
  fn, nargs = commands[sys.argv[1]]
  fn(*sys.argv[2:2 + nargs])
