"""The train step: a pure update of the train state on one global batch
(`make_train_step`), and its jit with the state's and the batch's shardings
(`jit_train_step`).

The loss is written as if on one device over the *global* batch; `jax.jit`
with NamedShardings lets XLA split it over the mesh, so 1 device and 8
devices give the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from alip_jax import accumulation, downweighted, losses, mesh as mesh_lib, optim
from alip_jax.models import two_towers


def make_train_step(model, config, tx):
  """The pure update: (state, global batch) → (state, scalar summary)."""
  lr_schedule = optim.schedule(config.optim, config.train.steps)
  accum_steps = config.train.accum_steps
  objective = losses.get(config.loss)

  def train_step(state, batch):
    # Per-step randomness (caption mixing) from the seed and the step alone,
    # so it does not depend on the mesh and repeats exactly after a resume.
    rng = jax.random.fold_in(jax.random.key(config.seed), state["step"])
    images, aug, texts = objective.inputs(batch, rng)

    def embed(params, inputs):
      return model.apply({"params": params}, inputs["images"], inputs["texts"],
                         inputs["aug"])[0]

    def loss_from_embeddings(embeddings, params):
      logit_params = {k: params[k] for k in two_towers.LOGIT_PARAMS if k in params}
      loss, gates, metrics = objective.loss(embeddings, logit_params, state["gates"])
      return loss, (gates, metrics)

    inputs = {"images": images, "texts": texts, "aug": aug}
    if accum_steps > 1:  # GradCache: the loss still sees the whole global batch
      (loss, (gates, metrics)), grads = accumulation.value_and_grad(
          embed, loss_from_embeddings, state["params"], inputs, accum_steps)
    else:
      (loss, (gates, metrics)), grads = jax.value_and_grad(
          lambda p: loss_from_embeddings(embed(p, inputs), p), has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    # As open_clip / official ALIP: clamp logit scales to [0, ln 100].
    params = {**params, **{k: jnp.clip(params[k], 0.0, two_towers.LOGIT_SCALE_MAX)
                           for k in ("logit_scale", "domain_log_scale") if k in params}}
    # A non-finite loss or gradient skips the update: params, optimiser and
    # gates stay as they were; the step (= batches consumed) still advances.
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    skips = {"total": state["skips"]["total"] + (~finite).astype(jnp.int32),
             "consecutive": jnp.where(finite, 0, state["skips"]["consecutive"] + 1)}
    new_state = {"step": state["step"] + 1, "params": keep(params, state["params"]),
                 "opt": keep(opt_state, state["opt"]), "gates": keep(gates, state["gates"]),
                 "skips": skips}
    summary = {"loss": loss, "grad_norm": grad_norm, "skipped_steps": skips["total"],
               "consecutive_skips": skips["consecutive"],
               **{k: params[k] for k in ("logit_scale", "logit_bias") if k in params},
               "lr": lr_schedule(state["step"]),
               **{k: jnp.mean(v) for k, v in metrics.items()}, **new_state["gates"],
               # Per-sample gate weights and similarities, for TensorBoard histograms.
               **{f"hist_{k}": v for k, v in metrics.items() if k.startswith(("weight_", "s_"))},
               **downweighted.lowest_weighted(metrics, batch, config.train.log_down_weighted)}
    return new_state, summary

  return train_step


def jit_train_step(model, config, spec, mesh):
  """`make_train_step` jitted for `mesh`: the state (a `state.StateSpec`'s
  shardings) donated, every batch entry split over data × fsdp, the summary
  replicated."""
  rep = mesh_lib.replicated(mesh)
  return jax.jit(
      make_train_step(model, config, spec.optimizer),
      in_shardings=(spec.sharding, mesh_lib.batch_sharding(mesh)),  # every batch entry
      out_shardings=(spec.sharding, rep),
      donate_argnums=0)
