"""Evaluation: each metric on a hand-checked case, the linear probe's
solver, and a TFDS-sourced zero-shot / linear-probe / retrieval run through
`python -m alip_jax.evaluate` and through the trainer, with exact counts."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alip_jax
from alip_jax import train
from alip_jax.evaluation import classification, retrieval, tasks
from conftest import tiny_config
from test_end_to_end import ROOT


def test_retrieval_five_captions_per_image_hand_checked():
  """4 images × 5 captions. With identity image embeddings the similarity is
  the text matrix itself: S[i, j] = score of caption j for image i."""
  S = np.full((4, 20), -0.5)
  S[0, 0:5] = 0.9                            # image 0: own captions on top → rank 0
  S[1, 5:10] = 0.5
  S[1, [10, 11, 12]] = [0.6, 0.7, 0.8]       # image 1: 3 captions above its own → rank 3
  S[2, 10:15] = 0.3
  S[2, 0:6] = 0.4                            # image 2: 6 above → rank 6
  S[3, 15:20] = 0.0
  S[3, 0:12] = 0.2                           # image 3: 12 above → rank 12
  text_image = np.repeat(np.arange(4), 5)
  metrics = retrieval.retrieval_metrics(np.eye(4), S.T, text_image)
  # i2t: hits at 1: {0}; at 5: {0, 1}; at 10: {0, 1, 2}.
  assert (metrics["i2t_R@1"], metrics["i2t_R@5"], metrics["i2t_R@10"]) == (0.25, 0.5, 0.75)
  # t2i: captions 10, 11, 12 score higher with image 1 than with their own
  # image 2; the other 17 captions rank their image first.
  assert (metrics["t2i_R@1"], metrics["t2i_R@5"], metrics["t2i_R@10"]) == (0.85, 1.0, 1.0)


def test_zeroshot_prompt_ensemble_and_accuracies_hand_checked():
  # Two templates; the text encoder returns a fixed vector per prompt.
  vectors = {"a x.": [1, 0, 0], "b x.": [0, 1, 0], "a y.": [0, 0, 1], "b y.": [0, 0.6, 0.8]}
  encode = lambda prompts: np.array([vectors[p] for p in prompts], np.float32)  # noqa: E731
  class_emb = classification.class_embeddings(encode, ["x", "y"], ["a {}.", "b {}."])
  np.testing.assert_allclose(class_emb[0], np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)
  want_y = np.array([0, 0.6, 1.8]) / np.linalg.norm([0, 0.6, 1.8])
  np.testing.assert_allclose(class_emb[1], want_y, atol=1e-6)

  # 6 classes; true-class ranks 0, 0, 1, 5, 2, 0 for labels 0, 0, 1, 1, 2, 3.
  scores = np.array([[9, 1, 1, 1, 1, 1], [9, 8, 1, 1, 1, 1], [5, 4, 1, 1, 1, 1],
                     [1, 0, 2, 3, 4, 5], [5, 5.5, 5, 1, 1, 1], [1, 1, 1, 7, 1, 1]], float)
  labels = np.array([0, 0, 1, 1, 2, 3])
  metrics = classification.accuracy_metrics(scores, labels, 6)
  assert metrics["top1"] == pytest.approx(3 / 6)
  assert metrics["top5"] == pytest.approx(5 / 6)
  # Per class (classes 4 and 5 have no image): 0 → 1, 1 → 0, 2 → 0, 3 → 1.
  assert metrics["mean_per_class"] == pytest.approx(0.5) and metrics["num_images"] == 6


def test_logistic_fit_reaches_the_optimum_and_the_probe_picks_a_penalty():
  rng = np.random.default_rng(0)
  centres = rng.normal(0, 1, (3, 8))
  def blobs(n):
    y = np.arange(n) % 3
    return (centres[y] + rng.normal(0, 0.5, (n, 8))).astype(np.float32), y
  x, y = blobs(90)
  params = classification.fit_logistic(x, y, 1e-2, 3, 300)
  def loss(p):
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ p[0] + p[1], y).mean()
    return ce + 0.5 * 1e-2 * jnp.sum(p[0] ** 2)
  grads = jax.grad(loss)(params)
  assert max(float(jnp.abs(g).max()) for g in grads) < 1e-4  # stationary point
  (vx, vy), (tx, ty) = blobs(30), blobs(61)
  result = classification.linear_probe(x, y, vx, vy, tx, ty, 3)
  assert result["accuracy"] > 0.9 and result["l2"] in classification.L2_SWEEP
  assert (result["num_train"], result["num_val"], result["num_test"]) == (90, 30, 61)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  from tiny_tfds import tiny_colors
  directory = str(tmp_path_factory.mktemp("tfds"))
  tiny_colors.build(directory)
  return directory


@pytest.fixture(scope="module")
def trained_workdir(tiny_corpus, tfds_dir, tmp_path_factory):
  """2 steps; evaluation in training also runs zero-shot and the probe."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.train.steps, config.train.checkpoint_every = 2, 2
  config.eval.zeroshot = "tiny_colors:test"
  config.eval.linear_probe = "tiny_colors:train:test"
  config.eval.tfds_data_dir = tfds_dir
  result = train.train_and_evaluate(config, workdir)
  return workdir, result


def test_trainer_logs_zeroshot_and_probe(trained_workdir, tfds_dir):
  workdir, result = trained_workdir
  metrics = result.eval
  assert metrics["zeroshot/tiny_colors/num_images"] == 37
  assert metrics["zeroshot/tiny_colors/num_classes"] == 3
  # The logged accuracies are those of the run's final params: the same task
  # through alip_jax.load's encoders of the last checkpoint gives them.
  loaded = alip_jax.load(workdir)
  again = tasks.run_zeroshot(loaded.encode_image, loaded.encode_text, "tiny_colors:test",
                             tiny_config().data.image_size, 16, tfds_dir)
  logged = {k.removeprefix("zeroshot/tiny_colors/"): v for k, v in metrics.items()
            if k.startswith("zeroshot/tiny_colors/")}
  assert "top1" in logged and logged.keys() == again.keys()
  for k, v in logged.items():
    assert v == pytest.approx(again[k], abs=1e-9), k
  assert metrics["linear_probe/tiny_colors/num_test"] == 37
  # Colour is easy to read off even barely trained features.
  assert metrics["linear_probe/tiny_colors/accuracy"] > 0.9


@pytest.mark.slow
def test_evaluate_cli_writes_exact_counts_and_matches_the_trainer(trained_workdir, tfds_dir):
  workdir, result = trained_workdir
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.evaluate", "--workdir", workdir,
       "--tasks", "retrieval,zeroshot,linear_probe", "--batch_size", "16"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(os.path.join(workdir, "eval", "2.json")) as f:
    results = json.load(f)
  assert results["step"] == 2
  # Datasets came from the workdir's config; 37 and 200 items with batches of
  # 16 on 8 devices: padded, then cut, never dropped or repeated.
  zeroshot, probe = results["zeroshot/tiny_colors:test"], results["linear_probe/tiny_colors:train:test"]
  assert zeroshot["num_images"] == 37 and probe["num_train"] + probe["num_val"] == 60
  assert results["retrieval"]["num_images"] == 200
  # The same numbers as the trainer's own evaluation (another batch size).
  want = result.eval
  assert zeroshot["top1"] == pytest.approx(want["zeroshot/tiny_colors/top1"])
  assert results["retrieval"]["i2t_R@5"] == pytest.approx(want["i2t_R@5"])
  assert probe["accuracy"] == pytest.approx(want["linear_probe/tiny_colors/accuracy"], abs=0.03)
  assert "| zeroshot/tiny_colors:test | top1 |" in run.stdout
  assert os.path.exists(os.path.join(workdir, "eval", "2.md"))


def test_evaluate_errors_name_what_to_do(tfds_dir):
  from alip_jax.evaluation import tfds_sources
  with pytest.raises(FileNotFoundError, match="tfds build no_such_set --file_format=array_record"):
    tfds_sources.open_source("no_such_set", "test", data_dir=tfds_dir)
  with pytest.raises(ValueError, match="NAME:SPLIT"):
    tfds_sources.parse_spec("cifar10")
  source = tfds_sources.open_source("tiny_colors", "test", data_dir=tfds_dir)
  with pytest.raises(ValueError, match="WordNet ids"):
    tasks.classnames_for(tfds_sources.ClassificationSource(
        "x", "test", source.source, ["n01440764", "n01443537", "n01484850"]))


def test_embedded_corpus_as_a_tfds_set(tiny_corpus, tmp_path):
  """alip_synthetic_colors: the corpus's val/test images, labelled by the
  colour of the largest object, read back through a TFDS data source."""
  import grain
  from alip_jax.data import records
  from alip_jax.tools import synthetic, tfds_synthetic
  from alip_jax.evaluation import tfds_sources
  tfds_synthetic.prepare(tiny_corpus, str(tmp_path))
  test = tfds_sources.open_source(tfds_synthetic.NAME, "test", str(tmp_path))
  train_split = tfds_sources.open_source(tfds_synthetic.NAME, "train", str(tmp_path))
  assert (len(train_split), len(test)) == (50, 200)
  assert test.classnames == list(synthetic.COLOR_NAMES)
  corpus = grain.sources.ArrayRecordDataSource(records.split_files(tiny_corpus, "test").files)
  want = {}
  for i in range(len(corpus)):
    record = records.decode(corpus[i])
    want[record["key"]] = synthetic.COLOR_NAMES.index(record["meta"]["label_color"])
  got = {}
  for i in range(len(test)):
    raw = test.source.source[i]
    key = raw["key"].decode() if isinstance(raw["key"], bytes) else raw["key"]
    got[key] = int(raw["label"])
  assert got == want
