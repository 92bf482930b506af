"""ALIP at paper scale: the official recipe on YFCC15M (docs/METHOD.md,
"ALIP: the paper-scale recipe").

  python -m alip_jax.main --config configs/alip_yfcc15m.py:B/32 \
      --config.data.dir=/data/yfcc15m_triplets --workdir gs://bucket/alip_b32

The argument picks the image tower ('B/32' as in the paper's Tables 1–4,
'B/16', 'L/14', or open_clip's names 'ViT-B-32', 'ViT-B-16', 'ViT-L-14');
the text tower is CLIP's ('B', or 'L' with L/14). A TPU slice after a comma
('B/16,v5e-256') applies the mesh, remat and scan that were checked to fit
that slice (POD_PRESETS, docs/BENCHMARKS.md). The
data directory holds ArrayRecord triplet shards and tokenizer.model
(docs/DATA.md). Everything else follows the official code: AdamW(0.9, 0.98)
lr 1e-3 with one-cycle, weight decay 0.2 on every parameter, global batch
4096, 32 epochs, GELU towers, the official gates. The one known difference:
the official OneCycleLR also cycles Adam's β1 (0.95 → 0.85 → 0.95); here β1
stays 0.9, as the paper states. Every field not set here has its default
from configs/base.py (224 px, 77 tokens, the ALIP loss).
"""

import math

import ml_collections

from alip_jax.models import zoo
from alip_jax.configs import base

NUM_PAIRS = 15_061_515  # YFCC15M as the official README reports it
EPOCHS = 32


# Settings that fit the global batch 4096 on a TPU slice, found by compiling
# the step for it (python -m alip_jax.benchmarks.tpu_compile; the figures are
# in docs/BENCHMARKS.md). Other towers / slices: check before renting.
POD_PRESETS = {
    ("B/32", "v5p-128"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("B/32", "v5e-256"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("B/32", "v4-64"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("B/16", "v5p-128"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("B/16", "v5e-256"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("B/16", "v4-64"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("L/14", "v5p-128"): dict(mesh=dict(data=-1, fsdp=1, model=1), remat="dots", scan=True),
    ("L/14", "v5e-256"): dict(mesh=dict(data=16, fsdp=16, model=1), remat="full", scan=True),
    # 128 per chip: 8 GradCache micro-batches (80.6 GiB of temporaries without).
    ("L/14", "v4-64"): dict(mesh=dict(data=1, fsdp=-1, model=1), remat="full", scan=True,
                            accum_steps=8),
}


def get_config(image: str = "B/32") -> ml_collections.ConfigDict:
  image, _, pod = image.partition(",")
  c = base.get_config()
  c.data.num_threads = 16
  c.data.prefetch = 4

  # Towers by name (alip_jax/models/zoo.py); compute in bfloat16.
  c.model.update(zoo.clip_model(image))
  c.model.dtype = "bfloat16"

  c.optim.schedule = "onecycle"
  c.optim.decay_mask = "all"

  c.train.batch_size = 4096
  c.train.steps = EPOCHS * math.ceil(NUM_PAIRS / c.train.batch_size)
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.train.eval_every = 5000
  c.eval.batch_size = 1024
  if pod:
    image = c.model.image  # open_clip's names ('ViT-B-16') are presets' zoo names too
    if (image, pod) not in POD_PRESETS:
      raise ValueError(f"configs/alip_yfcc15m.py: no preset for {image} on {pod}; known: "
                       f"{sorted(POD_PRESETS)}. Check a setting with "
                       f"python -m alip_jax.benchmarks.tpu_compile (README).")
    preset = POD_PRESETS[(image, pod)]
    c.mesh.update(preset["mesh"])
    c.model.remat, c.model.scan = preset["remat"], preset["scan"]
    c.train.accum_steps = preset.get("accum_steps", 1)
  return c
