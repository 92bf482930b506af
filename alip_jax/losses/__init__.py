"""Objectives, looked up by `config.loss.name` in `OBJECTIVES`:

  alip      the gated bi-path loss (alip.py)
  clip      symmetric InfoNCE; `loss.path` = raw | caption | both (clip.py)
  siglip    pairwise sigmoid loss; `loss.path` as clip (siglip.py)
  softclip  soft targets + neg-disentangled KL (reconstructed); `loss.path`
            as clip (softclip.py)
  mix       VeCLIP-style: per sample the caption with prob.
            `loss.mix.caption_prob`, else the raw text, then InfoNCE (mix.py)
  uniclip   MP-NCE over two augmented views and the text(s) (reconstructed);
            `loss.path` as clip (uniclip.py)

`objective = losses.get(config.loss)` is all the trainer, the model builder
and the tools ask: which texts to embed, how many views, which model heads,
the extra train state, and the loss from the global-batch embeddings
(objective.py lists them). contrastive.py and chunked.py hold the maths the
objectives share; `loss.chunked` ('auto' | 'on' | 'off') computes the InfoNCE
family (alip, clip, mix) and SigLIP with chunked.py's memory-bounded ring —
the same numbers; 'auto' switches it on from a global batch of
`loss.chunk_above`.

How to add an objective: write one module here with a subclass of
`objective.Objective` (or `PathObjective` for one on `loss.path`'s texts)
that sets what differs from the defaults — `text_names`, `num_views`,
`model_heads`, `inputs`, `init_state` — and defines `path_loss` (one
image–text term; the paths are summed) or the whole `loss`; add it to
`OBJECTIVES`, give its settings a place in `config.loss` (configs/), and test
its numbers against a reference (tests/test_objectives.py). The model, the
train step and the pipeline need no change: they read the declarations
(tests/test_objectives.py trains a toy objective that way).
"""

from __future__ import annotations

from alip_jax.losses import alip, clip, mix, siglip, softclip, uniclip
from alip_jax.losses.objective import Objective

OBJECTIVES = {"alip": alip.ALIP, "clip": clip.CLIP, "siglip": siglip.SigLIP,
              "softclip": softclip.SoftCLIP, "mix": mix.Mix, "uniclip": uniclip.UniCLIP}


def get(loss_cfg) -> Objective:
  """The objective `loss_cfg` (config.loss) names, built from it."""
  if loss_cfg.name not in OBJECTIVES:
    raise ValueError(f"config.loss.name must be one of {tuple(OBJECTIVES)}, "
                     f"got {loss_cfg.name!r}")
  return OBJECTIVES[loss_cfg.name](loss_cfg)
