"""The ALIP / CLIP losses against NumPy references from the spec, on 1 device
and on meshes of 8 (the loss is over the global batch whatever the mesh)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import reference
from alip_jax import losses, mesh as mesh_lib
from conftest import mesh_of
from alip_jax.losses import alip
from alip_jax.losses.contrastive import infonce_per_sample
from alip_jax.losses.objective import init_gate_state

N, D = 32, 8


def alip_cfg(**overrides):
  cfg = dict(momentum=0.99, init_mean=1.0, gamma_sample=2.0, gamma_pair=2.0,
             update_before_weights=True, normalization="mean_half",
             sample_gate=True, raw_pair_gate=True, caption_pair_gate=True,
             init_from_first_batch=False)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def embeddings(seed, n=N, d=D):
  """Normalised x, t, c with t·c spread on both sides of its mean."""
  rng = np.random.default_rng(seed)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  x = unit(rng.normal(size=(n, d)))
  c = unit(x + 0.6 * rng.normal(size=(n, d)))
  noise = rng.uniform(0.1, 3.0, size=(n, 1))  # some raw texts far off
  t = unit(c + noise * rng.normal(size=(n, d)))
  return [a.astype(np.float32) for a in (x, t, c)]


def make_loss_fn(mesh, cfg):
  loss_cfg = ml_collections.ConfigDict({"name": "alip", "alip": cfg})
  batch = mesh_lib.batch_sharding(mesh)
  rep = mesh_lib.replicated(mesh)

  def fn(x, t, c, scale, state):
    loss, new_state, metrics = losses.get(loss_cfg).loss(
        {"image": x, "raw": t, "caption": c}, {"logit_scale": scale}, state)
    weights = {k: metrics[f"weight_{k}"] for k in ("sample", "raw_pair", "caption_pair")}
    return loss, new_state, weights

  return jax.jit(fn, in_shardings=(batch, batch, batch, rep, rep))


@pytest.mark.parametrize("mesh_name", ["1", "4x2", "8x1", "2x4"])
@pytest.mark.parametrize("variant", [
    {}, {"update_before_weights": False}, {"normalization": "sum"},
    {"gamma_sample": 3.0, "gamma_pair": 1.0},
    {"sample_gate": False}, {"raw_pair_gate": False, "caption_pair_gate": False}])
def test_alip_matches_reference_over_steps(mesh_name, variant):
  """Loss, weights and running means match over 4 consecutive steps, starting
  from the official H₀ = 1 and continuing with the updated means."""
  cfg = alip_cfg(**variant)
  fn = make_loss_fn(mesh_of(mesh_name), cfg)
  state = init_gate_state(cfg.init_mean)
  ref_state = {k: 1.0 for k in alip.GATE_NAMES}
  for step in range(4):
    x, t, c = embeddings(step)
    scale = np.float32(np.log(1 / 0.07))
    loss, state, weights = fn(x, t, c, scale, state)
    ref_loss, ref_state, ref_weights = reference.alip_official(
        x, t, c, scale, ref_state, momentum=cfg.momentum,
        update_first=cfg.update_before_weights, normalization=cfg.normalization,
        gates=(cfg.sample_gate, cfg.raw_pair_gate, cfg.caption_pair_gate),
        gamma_sample=cfg.gamma_sample, gamma_pair=cfg.gamma_pair)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for k in alip.GATE_NAMES:
      np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-5, atol=1e-6)
    for k in weights:
      np.testing.assert_allclose(weights[k], ref_weights[k], rtol=1e-5, atol=1e-6)


def test_both_gate_branches_are_exercised():
  """Guard for the test above: the data really has S_tc on both sides of H."""
  x, t, c = embeddings(0)
  h = {k: 0.3 for k in alip.GATE_NAMES}
  _, _, w = reference.alip_official(x, t, c, 2.0, h)
  assert 0 < (w["sample"] < 1).sum() < N
  assert (w["raw_pair"] > 1).any()  # pair weights are not clipped


@pytest.mark.parametrize("mesh_name", ["1", "4x2"])
def test_gates_carry_no_gradient(mesh_name):
  """∇ of the ALIP loss equals ∇ of the same loss with the weights frozen."""
  mesh = mesh_of(mesh_name)
  cfg = alip_cfg()
  x, t, c = embeddings(1)
  state = {k: jnp.float32(0.3) for k in alip.GATE_NAMES}
  scale = jnp.float32(2.5)

  def alip_total(x, t, c, scale):
    return alip.alip_loss({"image": x, "raw": t, "caption": c}, scale, state, cfg)[0]

  _, _, metrics = alip.alip_loss({"image": x, "raw": t, "caption": c}, scale, state, cfg)
  w_raw = metrics["weight_sample"] * metrics["weight_raw_pair"]
  w_cap = metrics["weight_sample"] * metrics["weight_caption_pair"]

  def frozen_total(x, t, c, scale):
    per_raw = infonce_per_sample(x, t, scale)
    per_cap = infonce_per_sample(x, c, scale)
    return jnp.mean(w_raw * per_raw) + jnp.mean(w_cap * per_cap)

  batch = mesh_lib.batch_sharding(mesh)
  rep = mesh_lib.replicated(mesh)
  grad = lambda f: jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)),
                           in_shardings=(batch, batch, batch, rep))(x, t, c, scale)
  for got, want in zip(grad(alip_total), grad(frozen_total)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mesh_name", ["1", "4x2", "8x1"])
@pytest.mark.parametrize("path", ["raw", "caption", "both"])
def test_clip_matches_reference(mesh_name, path):
  mesh = mesh_of(mesh_name)
  cfg = ml_collections.ConfigDict({"name": "clip", "path": path,
                                   "normalization": "mean_half"})
  x, t, c = embeddings(2)
  scale = np.float32(3.0)
  batch, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  fn = jax.jit(lambda x, t, c, s: losses.get(cfg).loss(
      {"image": x, "raw": t, "caption": c}, {"logit_scale": s}, {})[0],
      in_shardings=(batch, batch, batch, rep))
  want = 0.0
  for name, y in (("raw", t), ("caption", c)):
    if path in (name, "both"):
      want += (reference.infonce_terms(x.astype(np.float64), y.astype(np.float64), scale)
               / 2).mean()
  np.testing.assert_allclose(fn(x, t, c, scale), want, rtol=1e-5)


def test_bipath_clip_equals_alip_with_gates_off():
  x, t, c = embeddings(3)
  emb = {"image": x, "raw": t, "caption": c}
  state = init_gate_state()
  off = alip_cfg(sample_gate=False, raw_pair_gate=False, caption_pair_gate=False)
  clip = ml_collections.ConfigDict({"name": "clip", "path": "both",
                                    "normalization": "mean_half"})
  np.testing.assert_allclose(alip.alip_loss(emb, 2.0, state, off)[0],
                             losses.get(clip).loss(emb, {"logit_scale": 2.0}, state)[0],
                             rtol=1e-6)


def test_unknown_loss_is_a_clear_error():
  with pytest.raises(ValueError, match=r"config.loss.name must be one of \('alip', 'clip', "
                     r"'siglip', 'softclip', 'mix', 'uniclip'\), got 'clipp'"):
    losses.get(ml_collections.ConfigDict({"name": "clipp"}))
  with pytest.raises(ValueError, match="config.loss.path must be one of"):
    losses.get(ml_collections.ConfigDict({"name": "clip", "path": "captions"}))


def test_sample_gate_on_the_raw_path_only():
  """`sample_gate_paths='raw'`: the raw path keeps W^s·W^t, the caption path
  gets W^c alone; the default ('both') is the official loss."""
  x, t, c = embeddings(4)
  emb = {"image": x, "raw": t, "caption": c}
  state = {k: jnp.float32(0.3) for k in alip.GATE_NAMES}
  _, _, both = alip.alip_loss(emb, 2.0, state, alip_cfg())
  _, _, raw_only = alip.alip_loss(emb, 2.0, state, alip_cfg(sample_gate_paths="raw"))
  assert float(jnp.min(both["weight_sample"])) < 0.5  # the gate is active here
  np.testing.assert_allclose(raw_only["loss_raw"], both["loss_raw"], rtol=1e-6)
  want_caption = jnp.mean(raw_only["weight_caption_pair"] * raw_only["infonce_caption"])
  np.testing.assert_allclose(raw_only["loss_caption"], want_caption, rtol=1e-6)
  assert float(raw_only["loss_caption"]) > float(both["loss_caption"])
  with pytest.raises(ValueError, match="sample_gate_paths"):
    alip.alip_loss(emb, 2.0, state, alip_cfg(sample_gate_paths="caption"))


@pytest.mark.parametrize("update_before_weights", [True, False])
def test_running_means_can_start_at_the_first_batch(update_before_weights):
  """`init_from_first_batch`: H₀ is the first global batch's means, so the
  first step's weights are those of the official code started at those
  means, and the updated means equal them (m·μ + (1−m)·μ = μ)."""
  cfg = alip_cfg(update_before_weights=update_before_weights, init_from_first_batch=True)
  state = init_gate_state(cfg.init_mean, from_first_batch=True)
  assert all(np.isnan(v) for v in state.values())
  x, t, c = embeddings(0)
  scale = np.float32(np.log(1 / 0.07))
  loss, new_state, weights = make_loss_fn(mesh_of("1"), cfg)(x, t, c, scale, state)
  means = {"h_tc": np.mean(np.sum(t * c, -1)), "h_xt": np.mean(np.sum(x * t, -1)),
           "h_xc": np.mean(np.sum(x * c, -1))}
  ref_loss, _, ref_weights = reference.alip_official(
      x, t, c, scale, means, momentum=cfg.momentum, update_first=update_before_weights,
      normalization=cfg.normalization, gates=(True, True, True),
      gamma_sample=cfg.gamma_sample, gamma_pair=cfg.gamma_pair)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for k in alip.GATE_NAMES:
    np.testing.assert_allclose(new_state[k], means[k], rtol=1e-5)
  for k in weights:
    np.testing.assert_allclose(weights[k], ref_weights[k], rtol=1e-5, atol=1e-6)
