"""One trainer step gives the same numbers on 1 device and on meshes of 8."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alip_jax import losses, mesh as mesh_lib, state as state_lib, step as step_lib
from alip_jax.data.tokenizer import EOT_ID, SOT_ID
from alip_jax.models import transformer, two_towers
from conftest import tiny_config

VOCAB = 64


def random_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  n, size, length = config.train.batch_size, config.data.image_size, config.data.context_length

  def tokens():
    out = np.zeros((n, length), np.int32)
    for i, k in enumerate(rng.integers(1, length - 1, size=n)):
      out[i, 0], out[i, 1 : k + 1], out[i, k + 1] = SOT_ID, rng.integers(4, VOCAB, k), EOT_ID
    return out

  batch = {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
           "raw_tokens": tokens(), "caption_tokens": tokens()}
  if config.loss.name == "uniclip":
    batch["image_view2"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    batch["aug"] = rng.uniform(0, 1, (n, 2, 8)).astype(np.float32)
  return batch


def make_model(config, vocab=VOCAB):
  """The model of `config` with the heads its objective declares."""
  return two_towers.from_config(config.model, vocab, config.data.context_length, eot_id=EOT_ID,
                                **losses.get(config.loss).model_heads)


def run_steps(config, mesh_sizes, devices, num_steps=2):
  mesh = mesh_lib.make_mesh(mesh_sizes, devices)
  model = make_model(config)
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  state = spec.initialise(jax.random.key(0))
  summaries = []
  with jax.set_mesh(mesh):
    for step in range(num_steps):
      batch = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh))
               for k, v in random_batch(config, step).items()}
      state, summary = train_step(state, batch)
      summaries.append(jax.device_get(summary))
  return jax.device_get(state), summaries


DP8, FSDP8, DP4_TP2 = dict(data=8), dict(fsdp=8), dict(data=4, model=2)


# Each variant on the sharding modes that exercise it: plain data parallel,
# FSDP (parameters and Adam moments sharded), tensor parallel, and mixes
# (the chunked ring then runs over data × fsdp together).
@pytest.mark.parametrize("variant,chunked,meshes", [
    ("alip", False, (DP8, FSDP8, DP4_TP2)),
    ("alip", True, (DP8, dict(data=2, fsdp=4))),
    ("clip_raw", False, (FSDP8,)),
    ("siglip", False, (DP4_TP2,)),
    ("siglip", True, (dict(data=2, fsdp=2, model=2),)),
    ("softclip", False, (dict(fsdp=4, model=2),)),
    ("mix", True, (FSDP8,)),
    ("uniclip", False, (DP4_TP2,))])
def test_same_numbers_on_1_and_8_devices(variant, chunked, meshes):
  """At the default Adam eps (1e-8): the loss, gradient norm, gate running
  means and every parameter after 2 steps agree within float rounding,
  except the attention key biases (see below). Measured worst cases over
  these meshes: loss, norm and means 8e-7 relative; parameters 9e-8 absolute,
  far under what the steps move them (checked: > 1e-4)."""
  config = tiny_config(variant)
  config.loss.chunked = "on" if chunked else "off"
  assert config.optim.eps == 1e-8
  ref_state, ref_summaries = run_steps(config, dict(data=1), jax.devices()[:1])
  one = mesh_lib.make_mesh(dict(data=1), jax.devices()[:1])
  initial = jax.device_get(state_lib.state_spec(make_model(config), config, one)
                           .initialise(jax.random.key(0)))["params"]
  # A key bias adds the same number to every score of a query, which softmax
  # ignores: its true gradient is exactly 0, its computed one is float noise
  # that depends on the reduction order, and Adam turns any noise into a step
  # of up to the lr (|m̂|/√v̂ < 1 in the first steps; seen: 3.5e-5). So these
  # leaves only have to stay within 2 × the summed lr of each other.
  lr_sum = sum(float(s["lr"]) for s in ref_summaries)
  is_key_bias = lambda path: jax.tree_util.keystr(path).endswith("['key']['bias']")  # noqa: E731
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(ref_state["params"]), jax.tree.leaves(initial)))
  assert moved > 100 * 1e-6  # the parameter tolerance below is far under a step
  # The gates' running means start at 1 and move only where the objective
  # has gates (ALIP): compared there, where they can differ.
  gated = float(ref_summaries[-1]["h_tc"]) != 1.0
  assert gated == (variant == "alip")
  scalars = ["loss", "grad_norm"] + (["h_tc", "h_xt", "h_xc"] if gated else [])
  for sizes in meshes:
    state, summaries = run_steps(config, sizes, jax.devices())
    for got, want in zip(summaries, ref_summaries):
      for k in scalars:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=f"{sizes} {k}")

    def compare(path, got, want):
      if is_key_bias(path):
        np.testing.assert_allclose(got, want, atol=2 * lr_sum, rtol=0, err_msg=f"{sizes} {path}")
      else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{sizes} {path}")
    jax.tree_util.tree_map_with_path(compare, state["params"], ref_state["params"])
    np.testing.assert_array_equal(state["step"], 2)


def test_parameter_shardings_follow_the_logical_rules():
  config = tiny_config()
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, model=2))
  model = make_model(config)
  sharding = state_lib.state_spec(model, config, mesh).sharding
  params, opt = sharding["params"], sharding["opt"]
  block = params["image"]["encoder"]["block00"]
  spec = lambda s: tuple(s.spec)
  # 'embed' → fsdp, 'heads' / 'mlp' / 'vocab' → model, the rest replicated.
  assert spec(block["attn"]["query"]["kernel"]) == ("fsdp", "model", None)
  assert spec(block["attn"]["query"]["bias"]) == ("model", None)
  assert spec(block["attn"]["out"]["kernel"]) == ("model", None, "fsdp")
  assert spec(block["mlp"]["fc"]["kernel"]) == ("fsdp", "model")
  assert spec(block["mlp"]["proj"]["kernel"]) == ("model", "fsdp")
  assert spec(params["text"]["token_embedding"]["embedding"]) == ("model", "fsdp")
  assert spec(params["image"]["patch_embed"]["kernel"]) == (None, None, None, "fsdp")
  assert spec(params["image"]["proj"]["kernel"]) == ("fsdp", None)
  replicated = lambda s: all(axes is None for axes in s.spec)
  assert replicated(block["ln_1"]["scale"]) and replicated(params["logit_scale"])
  # Adam's moments are sharded like their parameters.
  moments = [x for x in jax.tree.leaves(opt, is_leaf=lambda x: isinstance(x, dict) and "image" in x)
             if isinstance(x, dict)]
  assert len(moments) == 2
  for tree in moments:
    assert tree["image"]["encoder"]["block00"]["mlp"]["fc"]["kernel"] == block["mlp"]["fc"]["kernel"]
  # A dimension an axis does not divide is replicated instead of failing.
  odd = make_model(config, 63)
  odd_sharding = state_lib.state_spec(odd, config, mesh).sharding
  assert spec(odd_sharding["params"]["text"]["token_embedding"]["embedding"]) == (None, "fsdp")


def test_scan_and_remat_give_the_same_loss_and_gradients():
  """nn.scan over blocks and rematerialisation change how, not what."""
  config = tiny_config()
  config.model.image.depth = config.model.text.depth = 3
  batch = random_batch(config)
  texts = {"raw": batch["raw_tokens"], "caption": batch["caption_tokens"]}

  def loss_and_grads(model, params):
    def loss_fn(p):
      embeddings, logit_params = model.apply({"params": p}, batch["image"], texts)
      objective = losses.get(config.loss)
      return objective.loss(embeddings, logit_params, objective.init_state())[0]
    return jax.jit(jax.value_and_grad(loss_fn))(params)

  plain = make_model(config)
  params = nn.unbox(state_lib.init_params(plain, config, jax.random.key(0)))
  want_loss, want_grads = loss_and_grads(plain, params)
  for remat in ("none", "full", "dots"):
    config.model.scan, config.model.remat = True, remat
    scanned = make_model(config)
    loss, grads = loss_and_grads(scanned, transformer.stack_layers(params))
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 transformer.unstack_layers(grads), want_grads)
  # The scanned layout carries the 'layers' axis in its logical names.
  boxed = jax.eval_shape(lambda r: state_lib.init_params(scanned, config, r), jax.random.key(0))
  fc = boxed["image"]["encoder"]["blocks"]["mlp"]["fc"]["kernel"]
  assert fc.names == ("layers", "embed", "mlp") and fc.value.shape[0] == 3


def test_logit_scale_is_clamped():
  """A step whose Adam update throws the scale far out of [0, ln 100] leaves
  it on a bound. Without warm-up the first step runs at the full, absurd lr
  (Adam's first update is ±lr per parameter), so the unclamped scale would be
  ln(1/0.07) ± 10, outside the range in either direction."""
  config = tiny_config()
  config.optim.lr = 10.0
  config.optim.warmup_steps = 0  # with warm-up the first lr is 0 and nothing moves
  config.optim.grad_clip = 1e9
  state, summaries = run_steps(config, dict(data=1, model=1), jax.devices()[:1], num_steps=1)
  assert summaries[0]["lr"] == pytest.approx(10.0)
  assert float(state["params"]["logit_scale"]) in (0.0, pytest.approx(two_towers.LOGIT_SCALE_MAX))


def test_batch_not_dividing_the_mesh_is_a_clear_error():
  mesh = mesh_lib.make_mesh(dict(data=-1, model=1))
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the mesh's batch axes data × fsdp = 8.*multiple of 8"):
    mesh_lib.check_batch_size(12, mesh, 1)


def test_mesh_that_does_not_fit_the_devices_is_a_clear_error():
  with pytest.raises(ValueError, match="needs 6 devices but 8 are present"):
    mesh_lib.make_mesh(dict(data=3, model=2))
  with pytest.raises(ValueError, match="not divisible by the fixed axes' product 3"):
    mesh_lib.make_mesh(dict(data=-1, model=3))
  assert dict(mesh_lib.make_mesh(dict(data=-1, model=2)).shape) == {
      "data": 4, "fsdp": 1, "model": 2}
  with pytest.raises(ValueError, match=r"unknown axes \['tensor'\]"):
    mesh_lib.make_mesh(dict(data=-1, tensor=2))


def test_bfloat16_compute_keeps_float32_params_and_embeddings():
  config = tiny_config()
  config.model.dtype = "bfloat16"
  state, summaries = run_steps(config, dict(data=-1, model=1), jax.devices(), num_steps=1)
  assert np.isfinite(summaries[0]["loss"])
  assert {x.dtype for x in jax.tree.leaves(state["params"])} == {np.dtype("float32")}
  model = make_model(config)
  batch = random_batch(config)
  embeddings, _ = model.apply({"params": state["params"]}, batch["image"],
                              {"raw": batch["raw_tokens"]})
  assert embeddings["image"].dtype == jnp.float32 and embeddings["raw"].dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(embeddings["raw"], axis=-1), 1.0, rtol=1e-5)


def test_non_finite_step_is_skipped_and_counted():
  config = tiny_config()
  mesh = mesh_lib.make_mesh(dict(data=-1))
  model = make_model(config)
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  state = jax.device_get(spec.initialise(jax.random.key(0)))
  good_scale = state["params"]["logit_scale"]
  state["params"]["logit_scale"] = np.float32(np.nan)  # poisons the loss and every gradient
  batch = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh))
           for k, v in random_batch(config).items()}
  with jax.set_mesh(mesh):
    after, summary = train_step(jax.device_put(state, spec.sharding), batch)
  after = jax.device_get(after)
  assert not np.isfinite(summary["loss"])
  assert int(after["step"]) == 1
  assert (int(after["skips"]["total"]), int(after["skips"]["consecutive"])) == (1, 1)
  for part in ("params", "opt", "gates"):  # unchanged, bit for bit
    jax.tree.map(np.testing.assert_array_equal, after[part], state[part])
  after["params"]["logit_scale"] = good_scale
  with jax.set_mesh(mesh):
    again, summary = train_step(jax.device_put(after, spec.sharding), batch)
  again = jax.device_get(again)
  assert np.isfinite(summary["loss"])
  assert (int(again["skips"]["total"]), int(again["skips"]["consecutive"])) == (1, 0)
  # The update happened (the skipped step did not advance the optimiser, so
  # this is its step 0, at learning rate 0 in warm-up: Adam's moments move).
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), again["opt"], after["opt"])
  assert any(jax.tree.leaves(changed))
