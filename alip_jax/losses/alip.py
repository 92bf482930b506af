"""ALIP: the gated bi-path contrastive loss (Yang et al., ICCV 2023).

Default = the official code's procedure (deepglint/ALIP train.py/loss.py),
step by step (docs/METHOD.md, "ALIP", says why each choice and what differs):

1. cosines per sample: S_tc = t·c, S_xt = x·t, S_xc = x·c (global batch);
2. running means first: H ← m·H + (1−m)·mean(S), m = 0.99, H₀ = 1
   (`init_from_first_batch=True`: H₀ = the first global batch's means);
   (`update_before_weights=False` computes the weights with the old H, then
   updates — the other reading of the paper's order-ambiguous Eqs. 1–4);
3. Language Consistency Gate (sample weight), γ_s = 2:
     W^s_raw = exp(γ_s·(S_tc − H_tc)),  W^s = W^s_raw if W^s_raw < 1 else 1;
4. Description Consistency Gate (pair weights), γ_p = 2, *unclipped*, active
   only where W^s_raw < 1 (this is the paper's Eq. 4, not a code quirk):
     W^t = exp(γ_p·(S_xt − H_xt)) if W^s_raw < 1 else 1;  W^c likewise;
5. per path, mean_i W^s_i·W^pair_i·(CE_i2t + CE_t2i)/2 (`normalization='sum'`
   is the paper's −Σ_i without ½), total = raw path + caption path, one logit
   scale shared by both paths.

Every gate quantity is under stop_gradient and in float32. The official code
writes γ = 2 as `exp(·)**2`; we write exp(γ·d), which is the same number up
to float rounding. A gate switched off (the ablation of the paper's Table 4)
contributes 1; the pair gates keep their W^s_raw < 1 condition even when the
sample gate itself is off. `sample_gate_paths='raw'` applies W^s to the raw
path only (not in the paper; an ablation switch, off by default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from alip_jax.losses import chunked
from alip_jax.losses.contrastive import infonce_per_sample, reduce_weighted
from alip_jax.losses.objective import GATE_NAMES, Objective


def similarities(x, t, c) -> dict:
  """The gates' three cosines per sample, float32, no gradient:
  {"h_tc": S_tc = t·c, "h_xt": S_xt = x·t, "h_xc": S_xc = x·c} (keyed by
  the running mean each one feeds)."""
  x, t, c = (jax.lax.stop_gradient(v).astype(jnp.float32) for v in (x, t, c))
  return {"h_tc": jnp.sum(t * c, -1), "h_xt": jnp.sum(x * t, -1), "h_xc": jnp.sum(x * c, -1)}


def gate_weights(sims: dict, means: dict, gamma_sample: float, gamma_pair: float) -> dict:
  """Steps 3–4 at fixed means: {"sample": W^s, "raw_pair": W^t,
  "caption_pair": W^c}, each [N]. A pure function of the cosines, shared by
  the loss and by `alip_jax.score` (which scores data with it)."""
  sample_raw = jnp.exp(gamma_sample * (sims["h_tc"] - means["h_tc"]))
  below_mean = sample_raw < 1
  return {"sample": jnp.where(below_mean, sample_raw, 1.0),
          "raw_pair": jnp.where(below_mean, jnp.exp(gamma_pair * (sims["h_xt"] - means["h_xt"])), 1.0),
          "caption_pair": jnp.where(below_mean,
                                    jnp.exp(gamma_pair * (sims["h_xc"] - means["h_xc"])), 1.0)}


def gates(x, t, c, gate_state: dict, cfg: ml_collections.ConfigDict):
  """Returns (weights, new_gate_state, similarities); no gradient flows.

  weights: {"sample": W^s, "raw_pair": W^t, "caption_pair": W^c}, each [N]
  (a gate switched off contributes ones).
  """
  sims = similarities(x, t, c)
  gate_state = jax.lax.stop_gradient(gate_state)
  if cfg.init_from_first_batch:  # NaN means: start at this global batch's means
    gate_state = {k: jnp.where(jnp.isnan(v), jnp.mean(sims[k]), v) for k, v in gate_state.items()}
  updated = {k: cfg.momentum * gate_state[k] + (1 - cfg.momentum) * jnp.mean(sims[k])
             for k in GATE_NAMES}
  means = updated if cfg.update_before_weights else gate_state
  weights = gate_weights(sims, means, cfg.gamma_sample, cfg.gamma_pair)
  ones = jnp.ones_like(weights["sample"])
  weights = {"sample": weights["sample"] if cfg.sample_gate else ones,
             "raw_pair": weights["raw_pair"] if cfg.raw_pair_gate else ones,
             "caption_pair": weights["caption_pair"] if cfg.caption_pair_gate else ones}
  similarities_out = {"s_tc": sims["h_tc"], "s_xt": sims["h_xt"], "s_xc": sims["h_xc"]}
  return weights, updated, similarities_out


def alip_loss(embeddings: dict, logit_scale, gate_state: dict,
              cfg: ml_collections.ConfigDict, per_sample=infonce_per_sample):
  """The ALIP loss over the global batch.

  embeddings: {"image": x, "raw": t, "caption": c}, L2-normalised [N, D].
  Returns (loss, new_gate_state, metrics); metrics carry the per-sample
  weights, similarities and ungated InfoNCE terms ([N] arrays) for logging.
  `per_sample` computes the InfoNCE terms (the ring version for big batches).
  """
  x, t, c = embeddings["image"], embeddings["raw"], embeddings["caption"]
  weights, new_state, sims = gates(x, t, c, gate_state, cfg)
  ce_raw = per_sample(x, t, logit_scale)
  ce_caption = per_sample(x, c, logit_scale)
  raw_loss = reduce_weighted(ce_raw, weights["sample"] * weights["raw_pair"], cfg.normalization)
  # `sample_gate_paths='raw'` (an ablation, default 'both' = the official
  # code): W^s judges the raw text, so it may weight the raw path alone.
  paths = cfg.get("sample_gate_paths", "both")
  if paths not in ("both", "raw"):
    raise ValueError(f"config.loss.alip.sample_gate_paths must be 'both' or 'raw', got {paths!r}")
  caption_sample = weights["sample"] if paths == "both" else jnp.ones_like(weights["sample"])
  caption_loss = reduce_weighted(ce_caption, caption_sample * weights["caption_pair"],
                                 cfg.normalization)
  # The ungated per-sample InfoNCE too: the gated loss can rise while the
  # model improves, because the weights grow as the running means fall.
  metrics = {"loss_raw": raw_loss, "loss_caption": caption_loss,
             "infonce_raw": ce_raw, "infonce_caption": ce_caption,
             **{f"weight_{k}": v for k, v in weights.items()}, **sims}
  return raw_loss + caption_loss, new_state, metrics


class ALIP(Objective):
  """`loss.name = 'alip'`: both texts, the gates' running means as state;
  `loss.chunked` picks the ring form of the InfoNCE terms."""
  text_names = ("raw", "caption")

  def loss(self, embeddings, logit_params, gate_state):
    per_sample = chunked.infonce_fn(self.cfg, embeddings["image"].shape[0])
    return alip_loss(embeddings, logit_params["logit_scale"], gate_state, self.cfg.alip,
                     per_sample)
