"""Retrieval R@K and the gate AUC on hand-checked cases."""

import jax
import jax.numpy as jnp
import numpy as np

from alip_jax import mesh as mesh_lib
from alip_jax.evaluation import gates, retrieval


def test_recall_at_k_hand_checked():
  # 3 images × 4 texts; text j describes image text_image[j].
  text_image = np.array([0, 1, 2, 2])
  similarity = np.array([
      [0.9, 0.1, 0.2, 0.0],   # image 0: own text ranked 1st → hit @1
      [0.8, 0.5, 0.1, 0.0],   # image 1: own text ranked 2nd → hit @2, not @1
      [0.7, 0.6, 0.1, 0.5],   # image 2: best own text (0.5) ranked 3rd
  ])
  image_emb = np.eye(3)  # so that image_emb @ text_emb.T == similarity
  metrics = retrieval.retrieval_metrics(image_emb, similarity.T, text_image, ks=(1, 2, 3))
  assert metrics["i2t_R@1"] == 1 / 3 and metrics["i2t_R@2"] == 2 / 3 and metrics["i2t_R@3"] == 1
  # Text queries (columns): t0 → own image best: hit; t1 → image 2 (0.6)
  # above its own (0.5): rank 2; t2 → image 0 (0.2) above its own (0.1), the
  # tie with image 1 does not count: rank 2; t3 → own image best: hit.
  assert metrics["t2i_R@1"] == 2 / 4 and metrics["t2i_R@2"] == 1.0


def test_groups_make_interchangeable_captions_hits():
  text_image = np.array([0, 1])
  similarity = np.array([[0.1, 0.9], [0.2, 0.8]])
  image_emb = np.eye(2)
  strict = retrieval.retrieval_metrics(image_emb, similarity.T, text_image, ks=(1,))
  grouped = retrieval.retrieval_metrics(image_emb, similarity.T, text_image,
                                        image_group=np.array([7, 7]), ks=(1,))
  assert strict["i2t_R@1"] == 0.5 and grouped["i2t_R@1"] == 1.0


def test_embed_in_batches_pads_and_keeps_every_item():
  mesh = mesh_lib.make_mesh(dict(data=-1, model=1))
  inputs = np.arange(21 * 3, dtype=np.float32).reshape(21, 3)
  calls = []

  @jax.jit
  def double(x):
    return 2 * x

  def fn(x):
    calls.append(x.shape)
    return double(x)

  out = retrieval.embed_in_batches(fn, inputs, 8, mesh_lib.batch_sharding(mesh))
  np.testing.assert_array_equal(out, 2 * inputs)
  assert calls == [(8, 3)] * 3  # fixed shape: one compilation, padding dropped


def test_embed_in_batches_pads_with_copies_to_pad_to_and_handles_empty():
  calls = []

  def fn(x):
    calls.append(x)
    return jnp.asarray(x, jnp.float32)[:, :2] + 1

  inputs = np.arange(11 * 3, dtype=np.int32).reshape(11, 3)
  buckets = lambda n: 4 if n <= 4 else 8  # alip_jax.load's kind of rule: a few shapes
  out = retrieval.embed_in_batches(fn, inputs, 8, pad_to=buckets)
  np.testing.assert_array_equal(out, inputs[:, :2] + 1)
  assert [c.shape for c in calls] == [(8, 3), (4, 3)]
  np.testing.assert_array_equal(calls[1], inputs[[8, 9, 10, 10]])  # copies of the last row
  empty = retrieval.embed_in_batches(fn, inputs[:0], 8, pad_to=buckets)
  assert empty.shape == (0, 2) and empty.dtype == np.float32


def test_padding_never_changes_a_real_rows_embedding():
  """The padding rule's premise, on the real towers sharded over 8 devices:
  a row's embedding does not depend on what the other rows hold."""
  from conftest import tiny_config
  from test_train_step import make_model
  config = tiny_config()
  model = make_model(config, vocab=256)
  images = np.random.default_rng(0).integers(0, 256, (13, 32, 32, 3), np.uint8)
  tokens = np.zeros((1, config.data.context_length), np.int32)
  params = model.init(jax.random.key(0), images[:1], {"raw": tokens})["params"]
  encode = jax.jit(lambda x: model.apply({"params": params}, x, method=model.encode_image))
  sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh(dict(data=-1, model=1)))
  out = retrieval.embed_in_batches(encode, images, 8, sharding)
  zero_padded = np.concatenate([images, np.zeros_like(images[:3])])
  want = np.concatenate([mesh_lib.to_host(encode(jax.device_put(zero_padded[i:i + 8], sharding)))
                         for i in (0, 8)])[:13]
  np.testing.assert_array_equal(out, want)


def test_roc_auc_matches_pairwise_count():
  rng = np.random.default_rng(0)
  scores = np.round(rng.normal(size=60), 1)  # rounding makes ties
  positive = rng.random(60) < 0.4
  pos, neg = scores[positive], scores[~positive]
  pairwise = ((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean()
  np.testing.assert_allclose(gates.roc_auc(scores, positive), pairwise)
  assert gates.roc_auc([0.1, 0.9], [False, True]) == 1.0
