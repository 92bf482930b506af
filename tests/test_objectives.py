"""CLIP, SigLIP, SoftCLIP and caption mixing: values and gradients against the
NumPy references of tests/reference.py, on 1 device and on 8×1, 4×2 and 2×4
meshes; the references' own gradients against finite differences; and a toy
objective trained through the real train step, registered in the table alone."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import reference
from alip_jax import losses, mesh as mesh_lib
from alip_jax.losses import chunked, uniclip
from alip_jax.losses.contrastive import infonce_per_sample
from alip_jax.losses.objective import Objective
from alip_jax.losses.siglip import siglip_loss
from alip_jax.losses.softclip import softclip_loss
from conftest import MESHES, mesh_of
from test_losses import embeddings


def softclip_cfg(**overrides):
  cfg = dict(target_source="own_modality", target_temperature=0.1, alpha=0.2, beta=1.0,
             keep_hard_clip=False)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def jax_loss(name, **kw):
  """(fn(x, y, log_scale, bias) → loss, numpy reference(x, y, log_scale, bias))."""
  if name == "infonce":
    return (lambda x, y, s, b: jnp.mean(infonce_per_sample(x, y, s)),
            lambda x, y, s, b: reference.infonce(x, y, s))
  if name == "infonce_weighted":  # an ALIP path: constant per-sample weights
    w = np.random.default_rng(1).uniform(0.05, 3.0, 32)
    return (lambda x, y, s, b: jnp.mean(w.astype(np.float32) * infonce_per_sample(x, y, s)),
            lambda x, y, s, b: reference.infonce(x, y, s, weights=w[: len(x)]))
  if name == "siglip":
    return (lambda x, y, s, b: siglip_loss(x, y, s, b),
            lambda x, y, s, b: reference.siglip(x, y, s, b))
  cfg = softclip_cfg(**kw)
  return (lambda x, y, s, b: softclip_loss(x, y, s, cfg)[0],
          lambda x, y, s, b: reference.softclip(x, y, s, cfg.target_temperature, cfg.alpha,
                                                cfg.beta, cfg.target_source))


CASES = [("infonce", {}), ("infonce_weighted", {}), ("siglip", {}), ("softclip", {}),
         ("softclip", {"target_source": "other_modality"}),
         ("softclip", {"target_source": "mean", "alpha": 0.5, "beta": 0.3})]


@pytest.mark.parametrize("mesh_name", list(MESHES))
@pytest.mark.parametrize("name,kw", CASES)
def test_values_and_gradients_match_reference(name, kw, mesh_name):
  mesh = mesh_of(mesh_name)
  x, _, y = embeddings(5)
  log_scale, bias = np.float32(2.3), np.float32(-3.0)
  fn, ref = jax_loss(name, **kw)
  batch, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  value_and_grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3)),
                           in_shardings=(batch, batch, rep, rep))
  value, (gx, gy, gs, gb) = value_and_grad(x, y, log_scale, bias)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  want, g = ref(x64, y64, float(log_scale), float(bias))
  want_grads = reference.chain(g, x64, y64, float(log_scale))
  np.testing.assert_allclose(value, want, rtol=1e-5)
  np.testing.assert_allclose(gx, want_grads["x"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gy, want_grads["y"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gs, want_grads["log_scale"], rtol=1e-5, atol=1e-6)
  if name == "siglip":
    np.testing.assert_allclose(gb, want_grads["bias"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kw", CASES[:4])
def test_reference_gradients_match_finite_differences(name, kw):
  """Checks the hand-derived NumPy gradients themselves, in float64."""
  x, _, y = (a[:6, :4].astype(np.float64) for a in embeddings(6))
  _, ref = jax_loss(name, **kw)
  if name == "softclip":  # stop-gradient targets: held at the base x, y
    cfg = softclip_cfg(**kw)
    fn = lambda x, y, s, b: reference.softclip(x, y, s, cfg.target_temperature, cfg.alpha,
                                               cfg.beta, cfg.target_source,
                                               targets_from=(x0, y))[0]
  else:
    fn = lambda x, y, s, b: ref(x, y, s, b)[0]
  x0 = x
  _, g = ref(x, y, 2.0, -1.0)
  analytic = reference.chain(g, x, y, 2.0)
  arrays = {"x": x, "y": y, "s": np.float64(2.0), "b": np.float64(-1.0)}
  np.testing.assert_allclose(reference.finite_difference(fn, arrays, "x"), analytic["x"],
                             rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(reference.finite_difference(fn, arrays, "s"),
                             analytic["log_scale"], rtol=1e-5, atol=1e-8)
  if name == "siglip":
    np.testing.assert_allclose(reference.finite_difference(fn, arrays, "b"),
                               analytic["bias"], rtol=1e-5, atol=1e-8)


def test_softclip_keep_hard_clip_adds_infonce():
  x, _, y = embeddings(7)
  with_hard, parts = softclip_loss(x, y, 2.0, softclip_cfg(keep_hard_clip=True))
  without, _ = softclip_loss(x, y, 2.0, softclip_cfg())
  np.testing.assert_allclose(with_hard - without, reference.infonce(
      x.astype(np.float64), y.astype(np.float64), 2.0)[0], rtol=1e-5)
  assert "softclip_hard" in parts


def test_softclip_with_alpha_zero_and_no_neg_term_is_clip():
  """α = 0, β = 0: the soft target is one-hot, so L = ½(CE_i2t + CE_t2i) mean."""
  x, _, y = embeddings(8)
  loss, _ = softclip_loss(x, y, 2.0, softclip_cfg(alpha=0.0, beta=0.0))
  np.testing.assert_allclose(loss, reference.infonce(x.astype(np.float64),
                                                     y.astype(np.float64), 2.0)[0], rtol=1e-5)


@pytest.mark.parametrize("mesh_name", ["1", "4x2"])
def test_mixing_is_seeded_per_sample_and_mesh_independent(mesh_name):
  cfg = ml_collections.ConfigDict({"name": "mix", "normalization": "mean_half",
                                   "mix": {"caption_prob": 0.3}})
  n = 4096
  raw = np.zeros((n, 4), np.int32)
  caption = np.ones((n, 4), np.int32)
  mesh = mesh_of(mesh_name)
  batch = mesh_lib.batch_sharding(mesh)
  mix = losses.get(cfg)
  select = jax.jit(lambda r, c, key: mix.inputs(
      {"image": r, "raw_tokens": r, "caption_tokens": c}, key)[2]["mixed"],
      in_shardings=(batch, batch, None))
  key = jax.random.fold_in(jax.random.key(0), 7)
  chosen = np.asarray(select(raw, caption, key))
  assert (chosen == chosen[:, :1]).all()  # whole rows are chosen, never mixed
  share = chosen[:, 0].mean()
  assert abs(share - 0.3) < 0.03
  np.testing.assert_array_equal(chosen, np.asarray(select(raw, caption, key)))
  other = np.asarray(select(raw, caption, jax.random.fold_in(jax.random.key(0), 8)))
  assert (other != chosen).any()
  # The same choice on one device:
  single = jax.jit(lambda r, c, key: mix.inputs(
      {"image": r, "raw_tokens": r, "caption_tokens": c}, key)[2]["mixed"])
  np.testing.assert_array_equal(chosen, np.asarray(single(raw, caption, key)))


def test_mix_loss_is_infonce_on_the_chosen_texts():
  cfg = ml_collections.ConfigDict({"name": "mix", "normalization": "mean_half",
                                   "mix": {"caption_prob": 0.5}})
  x, _, y = embeddings(9)
  loss, _, metrics = losses.get(cfg).loss({"image": x, "mixed": y}, {"logit_scale": 2.0}, {})
  np.testing.assert_allclose(loss, reference.infonce(x.astype(np.float64),
                                                     y.astype(np.float64), 2.0)[0], rtol=1e-5)
  assert set(metrics) == {"loss_mixed"}


def test_siglip_initial_scale_and_bias_follow_the_paper():
  head = losses.get(ml_collections.ConfigDict({"name": "siglip", "path": "raw"})).model_heads
  assert np.isclose(np.exp(head["logit_scale_init"]), 10.0)
  assert head["logit_bias_init"] == -10.0


RING_CASES = [
    ({"name": "alip"}, ("raw", "caption")),
    ({"name": "clip", "path": "both"}, ("raw", "caption")),
    ({"name": "siglip", "path": "raw"}, ("raw",)),
    ({"name": "mix"}, ("mixed",)),
]


@pytest.mark.parametrize("mesh_name", ["8x1", "4x2", "2x4"])
@pytest.mark.parametrize("case,names", RING_CASES)
def test_chunked_ring_equals_full(case, names, mesh_name):
  """The ring (shard_map + ppermute + online LSE) gives the full loss's
  values and gradients, gate updates included."""
  from test_losses import alip_cfg
  mesh = mesh_of(mesh_name)
  base = {"normalization": "mean_half", "alip": alip_cfg(), "path": "both",
          "mix": {"caption_prob": 0.5}, **case}
  x, t, c = embeddings(11, n=64)
  texts = dict(zip(names, (t, c)))
  params = {"logit_scale": jnp.float32(2.3), "logit_bias": jnp.float32(-2.0)}
  state = {k: jnp.float32(0.4) for k in ("h_tc", "h_xt", "h_xc")}
  batch, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  results = []
  for ring in (False, True):
    cfg = ml_collections.ConfigDict({**base, "chunked": ring})

    def fn(image, texts, params):
      loss, new_state, _ = losses.get(cfg).loss({"image": image, **texts}, params, state)
      return loss, new_state

    with jax.set_mesh(mesh):
      (loss, new_state), grads = jax.jit(
          jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True),
          in_shardings=(batch, batch, rep))(x, texts, params)
    results.append(jax.device_get((loss, new_state, grads)))
  (full_loss, full_state, full_grads), (ring_loss, ring_state, ring_grads) = results
  np.testing.assert_allclose(ring_loss, full_loss, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               ring_state, full_state)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               ring_grads, full_grads)


def test_chunked_auto_switches_at_the_configured_batch():
  cfg = ml_collections.ConfigDict({"chunked": "auto", "chunk_above": 1024})
  assert not chunked.use_chunked(cfg, 512) and chunked.use_chunked(cfg, 1024)
  with pytest.raises(ValueError, match="loss.chunked must be"):
    chunked.use_chunked(ml_collections.ConfigDict({"chunked": "yes"}), 8)


@pytest.mark.parametrize("mesh_name", ["1", "8x1", "4x2", "2x4"])
@pytest.mark.parametrize("num_texts", [1, 2])
def test_uniclip_mpnce_matches_reference(mesh_name, num_texts):
  from alip_jax.losses.uniclip import mpnce_loss
  mesh = mesh_of(mesh_name)
  x1, t, c = embeddings(12, n=16)
  x2 = embeddings(13, n=16)[0]
  texts = [t, c][:num_texts]
  log_scales = np.array([2.0, 2.6, 1.5], np.float32)
  offsets = np.array([0.1, -0.05, 0.2], np.float32)
  batch, rep = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  fn = jax.jit(jax.value_and_grad(lambda v1, v2, ts, s, b: mpnce_loss([v1, v2], ts, s, b)[0],
                                  argnums=(3, 4)),
               in_shardings=(batch, batch, batch, rep, rep))
  value, (g_scale, g_offset) = fn(x1, x2, texts, log_scales, offsets)
  ref = lambda s, b: reference.mpnce([x1, x2], texts, s, b)
  np.testing.assert_allclose(value, ref(log_scales.astype(np.float64),
                                        offsets.astype(np.float64)), rtol=1e-5)
  # Gradients of the domain parameters by central differences of the reference.
  arrays = {"s": log_scales.astype(np.float64), "b": offsets.astype(np.float64)}
  np.testing.assert_allclose(g_scale, reference.finite_difference(ref, arrays, "s"),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g_offset, reference.finite_difference(ref, arrays, "b"),
                             rtol=1e-4, atol=1e-6)


def test_uniclip_pipeline_emits_two_views_with_their_augmentation(tiny_corpus):
  from alip_jax.data import pipeline, records, tokenizer as tok_lib
  import os
  tok = tok_lib.Tokenizer(os.path.join(tiny_corpus, "tokenizer.model"), 32)
  ds = pipeline.train_dataset(records.split_files(tiny_corpus, "train").files, tok, 32, 8,
                              seed=0, counter=pipeline.BadRecordCounter(), process_index=0,
                              process_count=1, num_views=2, color_jitter=0.4)
  batch = next(iter(ds))
  assert batch["image"].shape == batch["image_view2"].shape == (8, 32, 32, 3)
  assert batch["aug"].shape == (8, 2, 8) and batch["aug"].dtype == np.float32
  aug = batch["aug"].reshape(-1, 8)
  x, y, w, h, flip = aug[:, 0], aug[:, 1], aug[:, 2], aug[:, 3], aug[:, 4]
  assert ((x >= 0) & (x + w <= 1 + 1e-6) & (y >= 0) & (y + h <= 1 + 1e-6)).all()
  assert (0.65 <= w * h).all() and set(np.unique(flip)) <= {0.0, 1.0}
  assert ((aug[:, 5:] >= 0.6) & (aug[:, 5:] <= 1.4)).all() and (aug[:, 5:] != 1).any()
  assert (batch["image"] != batch["image_view2"]).any()  # independent views


def test_uniclip_identity_augmentation_is_the_default_at_evaluation():
  from alip_jax.models import two_towers
  from conftest import tiny_config
  config = tiny_config("uniclip")
  model = two_towers.from_config(config.model, 64, 32, eot_id=3,
                                 **losses.get(config.loss).model_heads)
  images = np.zeros((2, 32, 32, 3), np.uint8)
  tokens = np.zeros((2, 32), np.int32)
  tokens[:, :2] = [2, 3]
  params = model.init(jax.random.key(0), images, {"raw": tokens})["params"]
  assert {"domain_log_scale", "domain_offset", "aug_hidden", "aug_out"} <= set(params)
  # Perturb the zero-initialised output layer so the augmentation matters.
  params["aug_out"]["kernel"] = jnp.ones_like(params["aug_out"]["kernel"])
  identity = np.broadcast_to(np.array(uniclip.IDENTITY_AUG, np.float32), (2, 8))
  enc = lambda aug: model.apply({"params": params}, images, aug, method=model.encode_image)
  np.testing.assert_allclose(enc(None), enc(identity), rtol=1e-6)
  assert np.abs(np.asarray(enc(None)) - np.asarray(enc(identity + 0.5))).max() > 1e-3


class CaptionMatch(Objective):
  """A toy objective, defined here only: each image against its own caption,
  −log σ(s·cos + b), no negatives; a learnable bias head and a step counter
  as its own train state."""
  text_names = ("caption",)

  @property
  def model_heads(self):
    return {"logit_scale_init": 1.0, "logit_bias_init": 0.5}

  def init_state(self):
    return {"steps": jnp.zeros((), jnp.int32)}

  def loss(self, embeddings, logit_params, gate_state):
    cos = jnp.sum(embeddings["image"] * embeddings["caption"], -1)
    loss = jnp.mean(-jax.nn.log_sigmoid(
        jnp.exp(logit_params["logit_scale"]) * cos + logit_params["logit_bias"]))
    return loss, {"steps": gate_state["steps"] + 1}, {"loss_caption": loss}


def test_a_new_objective_plugs_in_through_the_table_alone(monkeypatch):
  """Registering a class in `losses.OBJECTIVES` is all a new objective
  takes: the real model builder and train step give it its head, only its
  texts, its loss and its state."""
  from alip_jax import state as state_lib, step as step_lib
  from conftest import tiny_config
  from test_train_step import make_model, random_batch
  monkeypatch.setitem(losses.OBJECTIVES, "caption_match", CaptionMatch)
  config = tiny_config("clip_raw")
  config.loss.name = "caption_match"
  mesh = mesh_lib.make_mesh(dict(data=-1))
  model = make_model(config)
  spec = state_lib.state_spec(model, config, mesh)
  train_step = step_lib.jit_train_step(model, config, spec, mesh)
  state = spec.initialise(jax.random.key(0))
  assert float(state["params"]["logit_bias"]) == 0.5 and int(state["gates"]["steps"]) == 0
  batch = random_batch(config)
  del batch["raw_tokens"]  # not among its texts: the step must not read it
  embeddings, logit_params = model.apply({"params": state["params"]}, batch["image"],
                                         {"caption": batch["caption_tokens"]})
  want = CaptionMatch(config.loss).loss(embeddings, logit_params, state["gates"])[0]
  batch = {k: jax.device_put(v, mesh_lib.batch_sharding(mesh)) for k, v in batch.items()}
  with jax.set_mesh(mesh):
    state, first = train_step(state, batch)
    state, second = train_step(state, batch)
  np.testing.assert_allclose(first["loss"], want, rtol=1e-5)
  np.testing.assert_allclose(first["loss_caption"], want, rtol=1e-5)
  assert int(state["gates"]["steps"]) == 2 and int(second["steps"]) == 2
  assert float(state["params"]["logit_bias"]) != 0.5  # the head trains
