"""What an objective declares, and the defaults most objectives share.

An objective is a class built from `config.loss`. It declares what it needs
of the rest of the trainer and computes its loss from the global-batch
embeddings; nothing outside its module knows its name:

  text_names     the texts the model embeds (keys of the embeddings; the
                 batch holds them as `<name>_tokens`)
  num_views      augmented views per image the input pipeline must emit
  model_heads    keyword arguments for the model (`two_towers.TwoTowers`):
                 the logit scale's initial log, a learnable bias, an
                 augmentation-aware image embedding, per-domain-pair scales
  inputs(batch, rng) → (images, aug, texts) to embed
  init_state()   its entry in the train state ("gates")
  loss(embeddings, logit_params, gate_state) → (loss, gate_state, metrics)
"""

from __future__ import annotations

import jax.numpy as jnp

from alip_jax.losses.contrastive import LOGIT_SCALE_INIT

# ALIP's running means H_tc, H_xt, H_xc. Every objective's train state holds
# them (only ALIP moves them): a checkpoint's tree is the same whatever the
# loss, so a run resumes and `alip_jax.score` reads them the same way.
GATE_NAMES = ("h_tc", "h_xt", "h_xc")
PATHS = {"raw": ("raw",), "caption": ("caption",), "both": ("raw", "caption")}


def init_gate_state(init_mean: float = 1.0, from_first_batch: bool = False) -> dict:
  """The three running means (train state, checkpointed). `from_first_batch`:
  NaN, which ALIP's gates replace with the first global batch's means."""
  value = float("nan") if from_first_batch else init_mean
  return {name: jnp.asarray(value, jnp.float32) for name in GATE_NAMES}


class Objective:
  """The defaults: one un-augmented view, CLIP's logit scale, the named
  texts as the batch holds them, and a loss summed unweighted over the
  texts, each path's term from `path_loss`."""
  text_names: tuple[str, ...] = ()
  num_views: int = 1

  def __init__(self, cfg):
    self.cfg = cfg  # config.loss

  @property
  def model_heads(self) -> dict:
    return {"logit_scale_init": LOGIT_SCALE_INIT}

  @property
  def description(self) -> str:
    """How a model card names the loss."""
    return self.cfg.name

  def inputs(self, batch: dict, rng):
    """(images, augmentation vectors or None, {name: tokens}) to embed;
    `rng` is the step's key (the seed with the step folded in)."""
    del rng
    return batch["image"], None, {name: batch[f"{name}_tokens"] for name in self.text_names}

  def init_state(self) -> dict:
    return init_gate_state(self.cfg.alip.init_mean, self.cfg.alip.init_from_first_batch)

  def path_loss(self, image, text, logit_params):
    """(loss, metrics) of one image–text path, [N, D] embeddings."""
    raise NotImplementedError(f"objective {self.cfg.name!r} defines neither loss nor path_loss")

  def loss(self, embeddings: dict, logit_params: dict, gate_state: dict):
    """(loss, gate_state, metrics): the paths summed unweighted (CLIP on
    both texts equals ALIP with every gate off); path metrics get the
    text's name as suffix."""
    metrics, total = {}, 0.0
    for name in self.text_names:
      path_loss, parts = self.path_loss(embeddings["image"], embeddings[name], logit_params)
      metrics.update({f"{k}_{name}": v for k, v in parts.items()})
      metrics[f"loss_{name}"] = path_loss
      total = total + path_loss
    return total, gate_state, metrics


class PathObjective(Objective):
  """An objective on the texts `loss.path` names: 'raw', 'caption' or
  'both'."""

  def __init__(self, cfg):
    if cfg.path not in PATHS:
      raise ValueError(f"config.loss.path must be one of {tuple(PATHS)}, got {cfg.path!r}")
    super().__init__(cfg)

  @property
  def text_names(self) -> tuple[str, ...]:
    return PATHS[self.cfg.path]

  @property
  def description(self) -> str:
    return f"{self.cfg.name} on {self.cfg.path} text"
