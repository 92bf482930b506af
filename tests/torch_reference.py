"""The other side of the HF parity and interop tests: transformers' own
CLIPModel, processor and pipeline, and open_clip, in torch.

Runs in a separate interpreter (ALIP_TORCH_PYTHON; tests/run.sh makes a
Python 3.11 venv from requirements-torch.txt: torch with its torchvision,
transformers, open_clip), because the project's venv has no torch. Nothing
is downloaded.

  python torch_reference.py make DIR inputs.npz ACT   # random CLIPModel → DIR, outputs → DIR/ref.npz
  python torch_reference.py check DIR inputs.npz      # load DIR (our export), print outputs as JSON
  python torch_reference.py processor DIR request.json out.npz   # AutoProcessor + pipeline on DIR
  python torch_reference.py open_clip NAME DIR request.json out.npz  # open_clip on NAME
                          # (local-dir:DIR or hf-hub:ORG/NAME; DIR: the export, for its config)
"""

import inspect
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
  AutoProcessor as it picks its image processor (torchvision installed: the
  torchvision backend) and with backend="pil" (the one the export's
  preprocessing contract names), CLIPModel on what the PIL one gives, and the
  zero-shot-image-classification pipeline with that processor, on the
  request's files (`images`) and on their RGB versions (`rgb_images`)."""
  from PIL import Image
  from transformers import AutoProcessor, pipeline
  transformers.logging.set_verbosity_error()
  request = json.loads(open(request_path).read())
  chosen = AutoProcessor.from_pretrained(directory)
  proc = AutoProcessor.from_pretrained(directory, backend="pil")
  images = [Image.open(p) for p in request["images"]]
  inputs = proc(images=images, text=request["texts"], return_tensors="pt",
                padding="max_length", truncation=True)
  model = CLIPModel.from_pretrained(directory).eval()
  with torch.no_grad():
    out = model(**inputs)
  classify = pipeline("zero-shot-image-classification", model=directory,
                      image_processor=proc.image_processor)

  def scores(paths):
    return np.array([[{r["label"]: r["score"] for r in result}[label]
                      for label in request["labels"]]
                     for result in classify(paths, candidate_labels=request["labels"])])

  np.savez(out_path, pixel_values=inputs["pixel_values"].numpy(),
           input_ids=inputs["input_ids"].numpy(), image_embeds=out.image_embeds.numpy(),
           text_embeds=out.text_embeds.numpy(),
           pipeline_scores=scores(request["images"]),
           pipeline_rgb_scores=scores(request["rgb_images"]),
           classes=np.array([type(proc).__name__, type(proc.image_processor).__name__,
                             type(proc.tokenizer).__name__]),
           chosen_classes=np.array([type(chosen).__name__,
                                    type(chosen.image_processor).__name__]))


def open_clip_check(name, directory, request_path, out_path):
  """open_clip itself on our open_clip export: `name` through
  create_model_and_transforms (a strict state-dict load) and get_tokenizer;
  DIR's config fields against open_clip's config dataclasses. The request
  (.npz) may hold pixel_values and input_ids (fed to the encoders as they
  are), texts (through open_clip's tokenizer) and image_paths (through its
  preprocessing)."""
  import dataclasses

  import open_clip  # not installed is a failure: tests/run.sh installs it
  from open_clip import model as oc_model, transform as oc_transform
  from PIL import Image
  cfg = json.loads(open(f"{directory}/open_clip_config.json").read())
  fields = {"vision_cfg": oc_model.CLIPVisionCfg, "text_cfg": oc_model.CLIPTextCfg,
            "preprocess_cfg": oc_transform.PreprocessCfg}
  known = {k: {f.name for f in dataclasses.fields(v)} for k, v in fields.items()}
  known["model_cfg"] = set(inspect.signature(oc_model.CLIP).parameters) | {"custom_text"}
  unknown = {section: sorted(set(values) - known[section])
             for section, values in (("model_cfg", cfg["model_cfg"]),
                                     ("vision_cfg", cfg["model_cfg"]["vision_cfg"]),
                                     ("text_cfg", cfg["model_cfg"]["text_cfg"]),
                                     ("preprocess_cfg", cfg["preprocess_cfg"]))}
  request = dict(np.load(request_path))
  model, _, preprocess = open_clip.create_model_and_transforms(name)
  model.eval()
  results = {}
  with torch.no_grad():
    if "pixel_values" in request:
      results["image"] = model.encode_image(torch.from_numpy(request["pixel_values"]),
                                            normalize=True).numpy()
    if "input_ids" in request:
      results["text"] = model.encode_text(torch.from_numpy(request["input_ids"]).long(),
                                          normalize=True).numpy()
    if "texts" in request:
      tokenizer = open_clip.get_tokenizer(name)
      results["tokenizer"] = np.array(type(tokenizer).__name__)
      tokens = tokenizer(list(request["texts"]))
      results["tokens"] = tokens.numpy()
      results["texts_embeds"] = model.encode_text(tokens, normalize=True).numpy()
    if "image_paths" in request:
      pixels = torch.stack([preprocess(Image.open(p)) for p in request["image_paths"]])
      results["pixels"] = pixels.numpy()
      results["images_embeds"] = model.encode_image(pixels, normalize=True).numpy()
  np.savez(out_path, **results, status=np.array(f"open_clip {open_clip.__version__}"),
           unknown_fields=np.array(json.dumps(unknown)))


if __name__ == "__main__":
  commands = {"make": (make, 3), "check": (check, 2), "processor": (processor, 3),
              "open_clip": (open_clip_check, 4)}
  if len(sys.argv) < 2 or sys.argv[1] not in commands:
    raise SystemExit(__doc__)
  fn, nargs = commands[sys.argv[1]]
  fn(*sys.argv[2:2 + nargs])
