"""The embedded demo: tiny towers on the procedural noisy-web corpus.

  python -m alip_jax.main --config configs/demo.py --workdir /tmp/alip_demo
  python -m alip_jax.main --config configs/demo.py:clip_raw --workdir ...

Variants (after the colon), same data, steps and seed:
  alip          ALIP, official-code gates (default)
  clip_raw      CLIP on raw web text only
  clip_caption  CLIP on synthetic captions only
  bipath        both paths, no gates (= ALIP with every gate off)
  siglip        SigLIP sigmoid loss on both paths
  softclip      SoftCLIP (reconstructed) on both paths
  mix           VeCLIP-style mixing: caption with prob. 0.5, else raw text
  uniclip       UniCLIP (reconstructed): two views + both texts, MP-NCE

Every field not set here has its default from configs/base.py.
"""

import ml_collections

from alip_jax.configs import base

VARIANTS = ("alip", "clip_raw", "clip_caption", "bipath", "siglip", "softclip", "mix",
            "uniclip")


def get_config(variant: str = "alip") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"configs/demo.py variant must be one of {VARIANTS}, got {variant!r}")
  c = base.get_config()
  c.data.synthetic = True    # build the embedded corpus in data.dir if missing
  c.data.image_size = 64
  c.data.context_length = 32
  # Tiny towers by their sizes. base names them (str): None first, since a
  # ConfigDict field keeps its type except when it holds None.
  c.model.image = c.model.text = None
  c.model.image = dict(patch_size=8, width=96, depth=2, heads=4)
  c.model.text = dict(width=96, depth=2, heads=4)
  c.model.embed_dim = 96

  if variant == "clip_raw":
    c.loss.name, c.loss.path = "clip", "raw"
  elif variant == "clip_caption":
    c.loss.name, c.loss.path = "clip", "caption"
  elif variant == "bipath":
    c.loss.name, c.loss.path = "clip", "both"
  elif variant in ("siglip", "softclip", "uniclip"):
    c.loss.name, c.loss.path = variant, "both"
  elif variant == "mix":
    c.loss.name = "mix"
  return c
