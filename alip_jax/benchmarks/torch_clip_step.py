"""The open_clip side of `alip_jax.benchmarks.versus_torch` (PyTorch).

  python alip_jax/benchmarks/torch_clip_step.py '<JSON spec>'

(Run as a script, its directory is first on sys.path: no module beside it
may take a name torch imports, such as the standard library's `profile`.)

A plain script, run by path with the Python that has torch and
open_clip_torch (it imports nothing from alip_jax: torch's Python need not
have jax). It trains open_clip's `CLIP` model, eager or `torch.compile`d,
with what alip_jax's step does: bf16 autocast over fp32 master weights,
AdamW(0.9, 0.98, wd 0.2), grad-norm clipping at 1.0, uint8 images
normalised on the device, exact-erf GELU. Workloads:

* pairs: one image and one text per sample, symmetric InfoNCE (CLIP);
* triplets: one image and two texts (raw, caption) per sample, the two texts
  through the text tower in one batch, loss = InfoNCE(image, raw) +
  InfoNCE(image, caption): ALIP's bi-path loss WITHOUT its gates (the gates
  are a few [B]-sized ops; their FLOPs and time are negligible next to the
  towers).

Prints one JSON line: step_s (median of the timed steps after the warm-ups),
samples_per_s, peak_memory_gib (CUDA's max allocated; on CPU the process's
peak RSS as host_peak_rss_gib), the device and versions.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import resource
import statistics
import sys
import time
import types


class _Placeholder(type):
  """Any attribute of a placeholder is another placeholder class."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return _Placeholder(name, (), {})


class _PlaceholderModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves `torchvision` and its submodules as empty placeholders."""

  def find_spec(self, name, path=None, target=None):
    if name == "torchvision" or name.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = types.ModuleType(spec.name)
    module.__path__ = []
    module.__getattr__ = lambda attr: _Placeholder.__getattr__(_Placeholder, attr)
    return module

  def exec_module(self, module):
    pass


def import_open_clip():
  """open_clip imports torchvision for its image transforms, which this
  benchmark does not use. PyPI's torchvision wheels are CUDA builds that do
  not load against torch's CPU build (the --smoke run on a CPU machine), so
  where torchvision does not import, placeholders stand in for it."""
  try:
    import torchvision  # noqa: F401
    placeholders = False
  except Exception:  # not installed, or a build that does not match torch
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
    sys.meta_path.insert(0, _PlaceholderModules())
    placeholders = True
  from open_clip.model import CLIP
  return CLIP, placeholders


def build_model(spec, CLIP):
  image, text = spec["image"], spec["text"]
  return CLIP(
      embed_dim=spec["embed_dim"],
      vision_cfg=dict(layers=image["depth"], width=image["width"], patch_size=image["patch_size"],
                      head_width=image["width"] // image["heads"], mlp_ratio=4.0,
                      image_size=spec["image_size"]),
      text_cfg=dict(context_length=spec["context_length"], vocab_size=spec["vocab"],
                    width=text["width"], heads=text["heads"], layers=text["depth"]),
      quick_gelu=False)  # nn.GELU: exact erf, as alip_jax's model.act='gelu'


def random_batch(spec, device, torch):
  g = torch.Generator().manual_seed(0)
  n, size, length, vocab = spec["batch"], spec["image_size"], spec["context_length"], spec["vocab"]
  texts = 2 if spec["workload"] == "triplets" else 1
  images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
  tokens = torch.randint(1, vocab - 1, (texts * n, length), generator=g)
  lengths = torch.randint(5, length - 1, (texts * n,), generator=g)
  positions = torch.arange(length)
  tokens = torch.where(positions < lengths[:, None], tokens, 0)
  tokens[torch.arange(texts * n), lengths] = vocab - 1  # EOT: open_clip pools at the argmax id
  return images.to(device), tokens.to(device)


def main(spec):
  import torch
  import torch.nn.functional as F
  CLIP, placeholders = import_open_clip()
  from open_clip.version import __version__ as open_clip_version
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(0)
  model = build_model(spec, CLIP).to(device)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-8,
                                weight_decay=0.2, **({"fused": True} if device.type == "cuda" else {}))
  mean = torch.tensor([0.48145466, 0.4578275, 0.40821073], device=device).view(1, 3, 1, 1)
  std = torch.tensor([0.26862954, 0.26130258, 0.27577711], device=device).view(1, 3, 1, 1)
  autocast_dtype = torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32
  n = spec["batch"]

  def infonce(a, b, scale):
    logits = scale * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

  def loss_fn(images, tokens):
    with torch.autocast(device.type, dtype=autocast_dtype,
                        enabled=autocast_dtype != torch.float32):
      pixels = (images.float() / 255 - mean) / std
      image = F.normalize(model.encode_image(pixels), dim=-1).float()
      text = F.normalize(model.encode_text(tokens), dim=-1).float()
    scale = model.logit_scale.exp()
    return sum(infonce(image, part, scale) for part in text.split(n))

  if spec.get("compile"):
    loss_fn = torch.compile(loss_fn)

  def step(images, tokens):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(images, tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss

  images, tokens = random_batch(spec, device, torch)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
  times, start_all = [], time.perf_counter()
  for i in range(spec["warmup"] + spec["steps"]):
    start = time.perf_counter()
    loss = step(images, tokens)
    loss_value = float(loss.detach())  # a host sync, like alip_jax's block_until_ready
    sync()
    if i >= spec["warmup"]:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  result = {"step_s": round(step_s, 5), "samples_per_s": round(n / step_s, 1), "loss": loss_value,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "open_clip": open_clip_version,
            "torchvision_placeholders": placeholders,
            "wall_s": round(time.perf_counter() - start_all, 2)}
  if device.type == "cuda":
    result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
  else:
    result["host_peak_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  print(json.dumps(result))


if __name__ == "__main__":
  main(json.loads(sys.argv[1]))
