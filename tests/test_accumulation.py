"""GradCache accumulation gives the whole-batch loss and gradients."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from alip_jax import accumulation, losses, mesh as mesh_lib, state as state_lib
from alip_jax.losses.objective import init_gate_state
from alip_jax.models import two_towers
from conftest import tiny_config
from test_train_step import make_model, random_batch, run_steps


def whole_and_accumulated(variant, num_micro, mesh):
  config = tiny_config(variant)
  objective = losses.get(config.loss)
  model = make_model(config)
  params = nn.unbox(state_lib.init_params(model, config, jax.random.key(0)))
  batch = random_batch(config, seed=1)
  images, aug, texts = objective.inputs(batch, jax.random.key(0))
  inputs = {"images": images, "texts": texts, "aug": aug}
  gates = init_gate_state(0.5)  # below the batch means: the pair gates are active

  def embed(p, x):
    return model.apply({"params": p}, x["images"], x["texts"], x["aug"])[0]

  def loss_fn(embeddings, p):
    logit_params = {k: p[k] for k in two_towers.LOGIT_PARAMS if k in p}
    loss, new_gates, _ = objective.loss(embeddings, logit_params, gates)
    return loss, new_gates

  batch_sharding = mesh_lib.batch_sharding(mesh)
  inputs = jax.tree.map(lambda x: jax.device_put(x, batch_sharding), inputs)
  with jax.set_mesh(mesh):
    whole = jax.jit(jax.value_and_grad(lambda p: loss_fn(embed(p, inputs), p), has_aux=True))(params)
    accumulated = jax.jit(lambda p, x: accumulation.value_and_grad(
        embed, loss_fn, p, x, num_micro))(params, inputs)
  return whole, accumulated


@pytest.mark.parametrize("variant,num_micro,mesh", [
    ("clip_raw", 4, dict(data=1)), ("alip", 4, dict(data=1)), ("alip", 2, dict(data=8)),
    ("uniclip", 2, dict(fsdp=4, model=2))])
def test_gradcache_equals_the_whole_batch_gradient(variant, num_micro, mesh):
  devices = jax.devices()[:1] if mesh == dict(data=1) else jax.devices()
  whole, accumulated = whole_and_accumulated(variant, num_micro,
                                             mesh_lib.make_mesh(mesh, devices))
  (want_loss, want_gates), want_grads = whole
  (loss, gates), grads = accumulated
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), gates, want_gates)
  # Float summation order differs; the attention key bias has an exactly
  # zero true gradient (pure noise both ways), so compare to the global scale.
  scale = max(float(np.abs(x).max()) for x in jax.tree.leaves(want_grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
               grads, want_grads)
  # Not vacuous: the gradient is not zero anywhere it matters.
  assert float(optax_norm(want_grads)) > 1e-3


def optax_norm(tree):
  return np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree)))


def test_batch_that_does_not_split_is_a_clear_error():
  with pytest.raises(ValueError, match="a batch of 10 does not split into 4 micro-batches"):
    accumulation._split(np.zeros((10, 3)), 4)


def test_train_step_with_accumulation_matches_one_device_without():
  config = tiny_config()
  config.optim.eps = 1e-4  # see test_train_step.test_same_numbers_on_1_and_8_devices
  ref_state, ref_summaries = run_steps(config, dict(data=1), jax.devices()[:1])
  config.train.accum_steps = 2
  state, summaries = run_steps(config, dict(data=8), jax.devices())
  for got, want in zip(summaries, ref_summaries):
    for k in ("loss", "grad_norm", "h_tc", "h_xt", "h_xc"):
      np.testing.assert_allclose(got[k], want[k], rtol=2e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state["params"], ref_state["params"])
