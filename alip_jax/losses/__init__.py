"""Losses, selected by `config.loss.name`. Each is a pure function of the
global-batch embeddings (and, for ALIP, the gates' running means)."""

from __future__ import annotations

import ml_collections

from alip_jax.losses import alip
from alip_jax.losses.contrastive import infonce_per_sample, reduce_weighted

LOSSES = ("alip", "clip")


def text_inputs(loss_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Which texts the model must embed for this loss: 'raw' and/or 'caption'."""
  if loss_cfg.name == "alip":
    return ("raw", "caption")
  if loss_cfg.name == "clip":
    return {"raw": ("raw",), "caption": ("caption",), "both": ("raw", "caption")}[loss_cfg.path]
  raise ValueError(f"config.loss.name must be one of {LOSSES}, got {loss_cfg.name!r}")


def compute_loss(loss_cfg: ml_collections.ConfigDict, embeddings: dict,
                 logit_scale, gate_state: dict):
  """Returns (loss, new_gate_state, metrics) for the configured objective.

  'clip' with path 'raw' | 'caption' | 'both': plain symmetric InfoNCE on one
  path or the unweighted sum of both (= ALIP with every gate off). CLIP leaves
  the gate state unchanged.
  """
  if loss_cfg.name == "alip":
    return alip.alip_loss(embeddings, logit_scale, gate_state, loss_cfg.alip)
  metrics, total = {}, 0.0
  for name in text_inputs(loss_cfg):
    path_loss = reduce_weighted(
        infonce_per_sample(embeddings["image"], embeddings[name], logit_scale),
        normalization=loss_cfg.normalization)
    metrics[f"loss_{name}"] = path_loss
    total = total + path_loss
  return total, gate_state, metrics
