"""Named tower sizes: the CLIP family and the tiny ones the tests use.

A config picks towers by name (`model.image = 'B/16'`, `model.text = 'B'`;
open_clip's model names 'ViT-B-32', 'ViT-B-16', 'ViT-L-14' work for both
towers, and `clip_model(name)` gives the whole `model` entry with CLIP's
embedding width) or gives the numbers as a dict (`dict(patch_size=8, width=96, depth=2,
heads=4)`). Widths, depths and heads are those of OpenAI CLIP / open_clip.
"""

from __future__ import annotations

IMAGE_TOWERS = {
    "tiny/8": dict(patch_size=8, width=96, depth=2, heads=4),
    "S/16": dict(patch_size=16, width=384, depth=12, heads=6),
    "B/32": dict(patch_size=32, width=768, depth=12, heads=12),
    "B/16": dict(patch_size=16, width=768, depth=12, heads=12),
    "L/14": dict(patch_size=14, width=1024, depth=24, heads=16),
}
TEXT_TOWERS = {
    "tiny": dict(width=96, depth=2, heads=4),
    "B": dict(width=512, depth=12, heads=8),   # CLIP ViT-B/32, B/16
    "L": dict(width=768, depth=12, heads=12),  # CLIP ViT-L/14
}
# The joint embedding width CLIP uses with each image tower.
EMBED_DIMS = {"tiny/8": 96, "S/16": 384, "B/32": 512, "B/16": 512, "L/14": 768}
# open_clip's / the CLIP paper's model names: (image tower, text tower).
ALIASES = {"ViT-B-32": ("B/32", "B"), "ViT-B-16": ("B/16", "B"), "ViT-L-14": ("L/14", "L")}


def clip_model(name: str) -> dict:
  """'ViT-B-16' (or an image tower name, 'B/16') → dict(image, text,
  embed_dim) as CLIP pairs them, for a config's `model`."""
  image, text = ALIASES.get(name, (name, "L" if name == "L/14" else "B"))
  image_tower(image)  # raises on an unknown name
  return dict(image=image, text=text, embed_dim=EMBED_DIMS[image])


def _resolve(value, table, what):
  if isinstance(value, str):
    if value in ALIASES:  # 'ViT-B-16' names both towers of that model
      value = ALIASES[value][0 if what == "image" else 1]
    if value not in table:
      raise ValueError(f"unknown {what} tower {value!r}; known: {sorted(table)} and "
                       f"{sorted(ALIASES)}, or give a dict with the sizes")
    return dict(table[value])
  return dict(value)


def image_tower(value) -> dict:
  """'B/16', 'ViT-B-16' or a dict → dict(patch_size, width, depth, heads)."""
  return _resolve(value, IMAGE_TOWERS, "image")


def text_tower(value) -> dict:
  """'B', 'ViT-B-16' (its text tower) or a dict → dict(width, depth, heads)."""
  return _resolve(value, TEXT_TOWERS, "text")


def tower_flops(width: int, depth: int, length: int) -> float:
  """Forward matmul FLOPs of `depth` CLIP blocks on `length` tokens:
  q/k/v/out (4·w²) and MLP (8·w²) per token, plus QKᵀ and AV (2·L·w)."""
  return depth * (2 * length * 12 * width**2 + 4 * length**2 * width)


def model_flops(model_cfg, image_size: int, context_length: int, texts_per_sample: int = 2,
                training: bool = True, images_per_sample: int = 1) -> float:
  """Analytic FLOPs per sample (ALIP: one image, raw text and caption)."""
  image, text = image_tower(model_cfg.image), text_tower(model_cfg.text)
  patches = (image_size // image["patch_size"]) ** 2
  width, embed = image["width"], model_cfg.embed_dim
  image_fwd = (tower_flops(width, image["depth"], patches + 1)
               + 2 * patches * 3 * image["patch_size"] ** 2 * width + 2 * width * embed)
  text_fwd = (tower_flops(text["width"], text["depth"], context_length)
              + 2 * text["width"] * embed)
  forward = images_per_sample * image_fwd + texts_per_sample * text_fwd
  return 3 * forward if training else forward
