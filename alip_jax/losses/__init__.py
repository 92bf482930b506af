"""Losses, selected by `config.loss.name`. Each is a pure function of the
global-batch embeddings (and, for ALIP, the gates' running means).

  alip      the gated bi-path loss (alip.py)
  clip      symmetric InfoNCE; `loss.path` = raw | caption | both
  siglip    pairwise sigmoid loss; `loss.path` as clip
  softclip  soft targets + neg-disentangled KL (reconstructed); `loss.path` as clip
  mix       VeCLIP-style: per sample the caption with prob. `loss.mix.caption_prob`,
            else the raw text, then InfoNCE
  uniclip   MP-NCE over two augmented views and the text(s) (reconstructed);
            `loss.path` as clip; needs `data.num_views = 2`

`loss.chunked` ('auto' | 'on' | 'off'; True/False work too) computes the InfoNCE family (alip,
clip, mix) and SigLIP with the memory-bounded ring of chunked.py — the same
numbers; 'auto' switches it on from a global batch of `loss.chunk_above`.
SoftCLIP always uses the full form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from alip_jax.losses import alip, chunked
from alip_jax.losses.contrastive import infonce_per_sample, reduce_weighted
from alip_jax.losses.siglip import SIGLIP_BIAS_INIT, SIGLIP_SCALE_INIT, siglip_loss
from alip_jax.losses.softclip import softclip_loss
from alip_jax.losses.uniclip import mpnce_loss
from alip_jax.models.two_towers import LOGIT_SCALE_INIT

LOSSES = ("alip", "clip", "siglip", "softclip", "mix", "uniclip")
PATHS = {"raw": ("raw",), "caption": ("caption",), "both": ("raw", "caption")}


def _check(loss_cfg):
  if loss_cfg.name not in LOSSES:
    raise ValueError(f"config.loss.name must be one of {LOSSES}, got {loss_cfg.name!r}")
  if loss_cfg.name in ("clip", "siglip", "softclip", "uniclip") and loss_cfg.path not in PATHS:
    raise ValueError(f"config.loss.path must be one of {tuple(PATHS)}, got {loss_cfg.path!r}")


def head_kwargs(loss_cfg) -> dict:
  """What the loss needs of the model: the logit scale's initial log, a
  learnable bias (SigLIP), UniCLIP's augmentation MLP and domain scales."""
  _check(loss_cfg)
  if loss_cfg.name == "siglip":
    return {"logit_scale_init": SIGLIP_SCALE_INIT, "logit_bias_init": SIGLIP_BIAS_INIT}
  return {"logit_scale_init": LOGIT_SCALE_INIT, "uniclip": loss_cfg.name == "uniclip"}


def num_views(loss_cfg) -> int:
  """Augmented views per image the pipeline must emit."""
  return 2 if loss_cfg.name == "uniclip" else 1


def select_images(loss_cfg, batch: dict):
  """(images, augmentation vectors or None) to embed: UniCLIP stacks its two
  views along the batch ([view 1 | view 2])."""
  if loss_cfg.name != "uniclip":
    return batch["image"], None
  images = jnp.concatenate([batch["image"], batch["image_view2"]])
  aug = jnp.concatenate([batch["aug"][:, 0], batch["aug"][:, 1]])
  return images, aug


def text_inputs(loss_cfg) -> tuple[str, ...]:
  """The names of the texts the model embeds for this loss."""
  _check(loss_cfg)
  if loss_cfg.name == "alip":
    return ("raw", "caption")
  if loss_cfg.name == "mix":
    return ("mixed",)
  return PATHS[loss_cfg.path]


def select_texts(loss_cfg, batch: dict, rng) -> dict:
  """Token arrays to embed, by name. For 'mix', each sample's caption is
  chosen with probability `caption_prob` from `rng` (fold the step into it),
  before embedding, so only one text per sample goes through the tower."""
  if loss_cfg.name != "mix":
    return {name: batch[f"{name}_tokens"] for name in text_inputs(loss_cfg)}
  raw, caption = batch["raw_tokens"], batch["caption_tokens"]
  use_caption = jax.random.bernoulli(rng, loss_cfg.mix.caption_prob, (raw.shape[0],))
  return {"mixed": jnp.where(use_caption[:, None], caption, raw)}


def use_chunked(loss_cfg, global_batch: int) -> bool:
  mode = loss_cfg.get("chunked", "off")
  if mode == "auto":
    return global_batch >= loss_cfg.get("chunk_above", 8192)
  if mode in ("on", True):
    return True
  if mode in ("off", False):
    return False
  raise ValueError(f"config.loss.chunked must be 'auto', 'on' or 'off', got {mode!r}")


def compute_loss(loss_cfg: ml_collections.ConfigDict, embeddings: dict,
                 logit_params: dict, gate_state: dict):
  """Returns (loss, new_gate_state, metrics) for the configured objective.

  Paths are summed unweighted; `clip` with path 'both' equals ALIP with every
  gate off. Only ALIP changes the gate state.
  """
  _check(loss_cfg)
  scale = logit_params["logit_scale"]
  ring = loss_cfg.name != "uniclip" and use_chunked(loss_cfg, embeddings["image"].shape[0])
  per_sample = chunked.ring_infonce_per_sample if ring else infonce_per_sample
  if loss_cfg.name == "alip":
    return alip.alip_loss(embeddings, scale, gate_state, loss_cfg.alip, per_sample)
  if loss_cfg.name == "uniclip":
    views = jnp.split(embeddings["image"], 2)
    loss, metrics = mpnce_loss(views, [embeddings[n] for n in text_inputs(loss_cfg)],
                               logit_params["domain_log_scale"], logit_params["domain_offset"])
    return loss, gate_state, {"loss_mpnce": loss, **metrics}
  metrics, total = {}, 0.0
  for name in text_inputs(loss_cfg):
    image, text = embeddings["image"], embeddings[name]
    if loss_cfg.name in ("clip", "mix"):
      path_loss = reduce_weighted(per_sample(image, text, scale),
                                  normalization=loss_cfg.normalization)
    elif loss_cfg.name == "siglip" and ring:
      path_loss = jnp.mean(chunked.ring_siglip_row_sums(image, text, scale,
                                                        logit_params["logit_bias"]))
    elif loss_cfg.name == "siglip":
      path_loss = siglip_loss(image, text, scale, logit_params["logit_bias"])
    else:
      path_loss, parts = softclip_loss(image, text, scale, loss_cfg.softclip)
      metrics.update({f"{k}_{name}": v for k, v in parts.items()})
    metrics[f"loss_{name}"] = path_loss
    total = total + path_loss
  return total, gate_state, metrics
