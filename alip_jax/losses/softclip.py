"""SoftCLIP (Gao et al., AAAI 2024) — *reconstructed*, not checked against
the paper (no full text or official code was available; docs/METHOD.md,
"SoftCLIP (reconstructed)", lists every choice).

Every unknown is a config value (`config.loss.softclip`), with these defaults:

* targets come from the stop-gradient intra-modal similarity of the model's
  own normalised embeddings — they stand in for the paper's fine-grained
  (ROI / object-tag) features, which this trainer does not have;
  `target_source`: 'own_modality' (image→text rows use image–image
  similarity, text→image rows text–text; default) | 'other_modality' | 'mean';
* Q = softmax(sim / τ_s), τ_s = `target_temperature` (0.1);
* Y = (1 − α)·one-hot + α·Q, α = `alpha` (0.2);
  L_soft = ½·mean_i [KL(Y^{I2T}_i ‖ P^{I2T}_i) + KL(Y^{T2I}_i ‖ P^{T2I}_i)];
* neg-disentangled term: drop the positive from both distributions and
  renormalise (P̄ = softmax with the diagonal masked, Ȳ_ij = Q_ij / (1 − Q_ii)),
  L_neg = ½·mean_i [KL(Ȳ^{I2T}_i ‖ P̄^{I2T}_i) + KL(Ȳ^{T2I}_i ‖ P̄^{T2I}_i)];
* L = L_soft + β·L_neg, β = `beta` (1.0); `keep_hard_clip` adds plain InfoNCE.

Always the full form (no ring). All of it in log space (log-softmax with −inf
masks), never dividing by 1 − P_ii, which is unstable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from alip_jax.losses.contrastive import infonce_per_sample
from alip_jax.losses.objective import PathObjective


def _kl_rows(log_target, log_pred, mask=None):
  """Σ_j Y_ij (log Y_ij − log P_ij) per row; entries where `mask` is False
  (or Y = 0) contribute 0."""
  target = jnp.exp(log_target)
  terms = jnp.where(target > 0, target * (log_target - log_pred), 0.0)
  if mask is not None:
    terms = jnp.where(mask, terms, 0.0)
  return jnp.sum(terms, axis=1)


def _soft_and_neg(logits, log_prior, alpha, eye):
  """(KL of the softened target, KL of the negatives-only target) per row."""
  log_pred = jax.nn.log_softmax(logits, axis=1)
  # log Y = log((1 − α)·e_i + α·Q): log-sum-exp of the two parts per entry.
  log_onehot = jnp.where(eye, jnp.log1p(-alpha) if alpha < 1 else -jnp.inf, -jnp.inf)
  log_soft = jnp.logaddexp(log_onehot, jnp.log(alpha) + log_prior) if alpha > 0 else log_onehot
  soft = _kl_rows(log_soft, log_pred)
  off_diagonal = ~eye
  masked = lambda x: jnp.where(off_diagonal, x, -jnp.inf)
  log_pred_neg = jax.nn.log_softmax(masked(logits), axis=1)
  log_prior_neg = jax.nn.log_softmax(masked(log_prior), axis=1)
  neg = _kl_rows(log_prior_neg, log_pred_neg, off_diagonal)
  return soft, neg


def softclip_loss(image, text, logit_scale, cfg):
  """image, text: [N, D] normalised. Returns (loss, metrics)."""
  image, text = image.astype(jnp.float32), text.astype(jnp.float32)
  n = image.shape[0]
  eye = jnp.eye(n, dtype=bool)
  logits = jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * image @ text.T
  sg_image, sg_text = jax.lax.stop_gradient(image), jax.lax.stop_gradient(text)
  log_q_image = jax.nn.log_softmax(sg_image @ sg_image.T / cfg.target_temperature, axis=1)
  log_q_text = jax.nn.log_softmax(sg_text @ sg_text.T / cfg.target_temperature, axis=1)
  if cfg.target_source == "own_modality":
    prior_i2t, prior_t2i = log_q_image, log_q_text
  elif cfg.target_source == "other_modality":
    prior_i2t, prior_t2i = log_q_text, log_q_image
  elif cfg.target_source == "mean":
    prior_i2t = prior_t2i = jnp.logaddexp(log_q_image, log_q_text) - jnp.log(2.0)
  else:
    raise ValueError("config.loss.softclip.target_source must be 'own_modality', "
                     f"'other_modality' or 'mean', got {cfg.target_source!r}")
  soft_i2t, neg_i2t = _soft_and_neg(logits, prior_i2t, cfg.alpha, eye)
  soft_t2i, neg_t2i = _soft_and_neg(logits.T, prior_t2i, cfg.alpha, eye)
  loss_soft = jnp.mean(soft_i2t + soft_t2i) / 2
  loss_neg = jnp.mean(neg_i2t + neg_t2i) / 2
  loss = loss_soft + cfg.beta * loss_neg
  metrics = {"softclip_soft": loss_soft, "softclip_neg": loss_neg}
  if cfg.keep_hard_clip:
    hard = jnp.mean(infonce_per_sample(image, text, logit_scale))
    loss = loss + hard
    metrics["softclip_hard"] = hard
  return loss, metrics


class SoftCLIP(PathObjective):
  """`loss.name = 'softclip'`; the parts are logged per path."""

  def path_loss(self, image, text, logit_params):
    return softclip_loss(image, text, logit_params["logit_scale"], self.cfg.softclip)
