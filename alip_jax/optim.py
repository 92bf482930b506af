"""AdamW with ALIP's defaults, grad-norm clipping and the LR schedules."""

from __future__ import annotations

import jax
import optax


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """'warmup_cosine': linear warm-up to lr, cosine to 0.
  'onecycle': the official ALIP recipe (PyTorch OneCycleLR, pct_start 0.1):
  cosine from lr/25 to lr over 10 % of steps, then cosine to lr/25/1e4."""
  if optim_cfg.schedule == "warmup_cosine":
    warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, optim_cfg.lr, warmup, max(total_steps, warmup + 1), 0.0)
  if optim_cfg.schedule == "onecycle":
    return optax.cosine_onecycle_schedule(
        total_steps, optim_cfg.lr, pct_start=0.1, div_factor=25.0, final_div_factor=1e4)
  raise ValueError(f"config.optim.schedule must be 'warmup_cosine' or 'onecycle', "
                   f"got {optim_cfg.schedule!r}")


def decay_mask(params, mode: str):
  """'matrices': decay only Dense/Conv kernels (no biases, norms,
  embeddings, class token or logit scale). 'all': every parameter, as the
  official ALIP code does."""
  if mode == "all":
    return jax.tree.map(lambda _: True, params)
  if mode == "matrices":
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)
  raise ValueError(f"config.optim.decay_mask must be 'all' or 'matrices', got {mode!r}")


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip),
      optax.adamw(schedule(optim_cfg, total_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
                  eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay,
                  mask=lambda p: decay_mask(p, optim_cfg.decay_mask)))
