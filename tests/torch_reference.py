"""The other side of the HF parity tests: transformers' own CLIPModel in torch.

Runs in a separate interpreter (ALIP_TORCH_PYTHON; tests/run.sh makes a
Python 3.11 venv with torch's CPU build and transformers), because the
project's venv has no torch. Nothing is downloaded.

  python torch_reference.py make DIR inputs.npz ACT   # random CLIPModel → DIR, outputs → DIR/ref.npz
  python torch_reference.py check DIR inputs.npz      # load DIR (our export), print outputs as JSON
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


if __name__ == "__main__":
  if sys.argv[1] == "make":
    make(*sys.argv[2:5])
  elif sys.argv[1] == "check":
    check(*sys.argv[2:4])
  else:
    raise SystemExit(__doc__)
