"""Named tower sizes: the CLIP family and the tiny ones the tests use.

A config picks towers by name (`model.image = 'B/16'`, `model.text = 'B'`)
or gives the numbers as a dict (`dict(patch_size=8, width=96, depth=2,
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


def _resolve(value, table, what):
  if isinstance(value, str):
    if value not in table:
      raise ValueError(f"unknown {what} tower {value!r}; known: {sorted(table)}, "
                       f"or give a dict with the sizes")
    return dict(table[value])
  return dict(value)


def image_tower(value) -> dict:
  """'B/16' or a dict → dict(patch_size, width, depth, heads)."""
  return _resolve(value, IMAGE_TOWERS, "image")


def text_tower(value) -> dict:
  """'B' or a dict → dict(width, depth, heads)."""
  return _resolve(value, TEXT_TOWERS, "text")
