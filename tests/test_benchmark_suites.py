"""`alip-eval --benchmark`: the published retrieval sets read in their own
formats (TFDS coco_captions, Karpathy's Flickr30k split) with the 5-caption
protocol, zero-shot sets run when prepared, the rest listed with what to do."""

import json
import os

import numpy as np
import pytest

from alip_jax.evaluation import retrieval_sets, suites
from tiny_tfds import tiny_coco_captions


class IndexTokenizer:
  """'picture number k' → tokens [k, k, k, k]."""

  def encode(self, text):
    return np.full(4, int(text.split()[-1]), np.int32)


def one_hot(indices, width=8):
  return np.eye(width, dtype=np.float32)[np.asarray(indices)]


def encode_image(images, batch_size):
  """Picture k (red channel 30·k) → e_k; any other image → its own colour bins."""
  return one_hot(np.rint(images[..., 0].mean(axis=(1, 2)) / 30).astype(int))


def encode_text(tokens, batch_size):
  return one_hot(np.asarray(tokens)[:, 0])


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return tiny_coco_captions.build(str(tmp_path_factory.mktemp("tfds")))


@pytest.fixture(scope="module")
def flickr_dir(tmp_path_factory):
  """Karpathy's JSON layout: 3 test images (5 captions each), 1 train image."""
  directory = tmp_path_factory.mktemp("flickr30k")
  (directory / retrieval_sets.FLICKR30K_IMAGES).mkdir()
  entries = []
  for index, split in enumerate(["test", "train", "test", "test"]):
    name = f"{index}.jpg"
    tiny_coco_captions.picture(index, (50, 40)).save(
        directory / retrieval_sets.FLICKR30K_IMAGES / name, quality=95)
    entries.append({"filename": name, "split": split,
                    "sentences": [{"raw": c} for c in tiny_coco_captions.captions_of(index)]})
  (directory / retrieval_sets.FLICKR30K_JSON).write_text(json.dumps({"images": entries}))
  return str(directory)


def test_coco_captions_keeps_five_captions_per_image_in_order(tfds_dir):
  data = retrieval_sets.coco_captions(tfds_dir, "test", IndexTokenizer(), 16)
  assert data.images.shape == (7, 16, 16, 3) and data.images.dtype == np.uint8
  assert len(data.texts) == 35  # image 2's sixth caption is left out
  assert list(data.text_image) == [i for i in range(7) for _ in range(5)]
  pictures = np.array([int(key.removeprefix("coco id ")) - 1000 for key in data.keys])
  assert sorted(pictures) == list(range(7))  # TFDS stores them in its own order
  assert (data.texts[:, 0] == pictures[data.text_image]).all()


def test_flickr30k_reads_the_karpathy_split(flickr_dir):
  data = retrieval_sets.flickr30k_karpathy(flickr_dir, "test", IndexTokenizer(), 16)
  assert data.keys == ["0.jpg", "2.jpg", "3.jpg"] and len(data.texts) == 15


def test_fewer_than_five_captions_is_an_error_naming_the_image(tmp_path):
  (tmp_path / retrieval_sets.FLICKR30K_IMAGES).mkdir()
  tiny_coco_captions.picture(1).save(tmp_path / retrieval_sets.FLICKR30K_IMAGES / "a.jpg")
  (tmp_path / retrieval_sets.FLICKR30K_JSON).write_text(json.dumps({"images": [
      {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "picture number 1"}] * 4}]}))
  with pytest.raises(ValueError, match="a.jpg has 4 non-empty captions"):
    retrieval_sets.flickr30k_karpathy(str(tmp_path), "test", IndexTokenizer(), 16)


def test_core_suite_runs_what_is_prepared_with_exact_counts(tfds_dir, flickr_dir):
  results, missing = suites.run_suite(
      suites.SUITES["core"], encode_image, encode_text, IndexTokenizer(), 16, batch_size=4,
      tfds_data_dir=tfds_dir, flickr30k_dir=flickr_dir)
  assert set(results) == {"retrieval/coco_captions:test", "retrieval/flickr30k:test"}
  coco = results["retrieval/coco_captions:test"]
  assert (coco["num_images"], coco["num_texts"]) == (7, 35)
  assert coco["i2t_R@1"] == coco["t2i_R@1"] == 1.0  # every caption found its own picture
  assert coco["matches_protocol"] is False  # 7 images are not the published 5,000
  assert results["retrieval/flickr30k:test"]["num_texts"] == 15
  assert set(missing) == {"imagenet2012:validation", "cifar10:test", "cifar100:test"}
  assert "tfds build cifar10 --file_format=array_record" in missing["cifar10:test"]
  assert "downloads/manual" in missing["imagenet2012:validation"]


def test_zeroshot_sets_of_a_suite_run_when_prepared(tmp_path):
  from tiny_tfds import tiny_colors
  tiny_colors.build(str(tmp_path))
  rgb = lambda images, batch_size: np.asarray(images, np.float32).mean(axis=(1, 2)) / 255
  results, missing = suites.run_suite(
      {"zeroshot": ("tiny_colors:test",)}, rgb, lambda texts, batch_size: one_hot(
          [0] * len(texts), 3), IndexTokenizer(), 16, 8, tfds_data_dir=str(tmp_path))
  assert not missing and results["zeroshot/tiny_colors:test"]["num_images"] == 37
  assert "matches_protocol" not in results["zeroshot/tiny_colors:test"]


def test_a_suite_with_nothing_prepared_says_what_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="no set of the benchmark is prepared"):
    suites.run_suite(suites.SUITES["core"], encode_image, encode_text, IndexTokenizer(), 16, 4,
                     tfds_data_dir=str(tmp_path), flickr30k_dir=str(tmp_path))


@pytest.mark.slow
def test_evaluate_cli_runs_the_core_benchmark(tiny_corpus, tfds_dir, flickr_dir, tmp_path):
  import subprocess
  import sys
  from alip_jax import train
  from conftest import tiny_config
  config = tiny_config()
  config.data.dir = tiny_corpus
  config.train.steps = config.train.checkpoint_every = 1
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = subprocess.run(
      [sys.executable, "-m", "alip_jax.evaluate", "--workdir", workdir, "--benchmark", "core",
       "--tfds_data_dir", tfds_dir, "--flickr30k_dir", flickr_dir, "--batch_size", "16"],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(os.path.join(workdir, "eval", "1.json")) as f:
    results = json.load(f)
  assert "retrieval" not in results  # --tasks was not given: the suite only
  coco = results["retrieval/coco_captions:test"]
  assert (coco["num_images"], coco["num_texts"], coco["matches_protocol"]) == (7, 35, False)
  assert results["retrieval/flickr30k:test"]["num_texts"] == 15
  assert set(results["benchmark_skipped"]) == {"imagenet2012:validation", "cifar10:test",
                                               "cifar100:test"}
  assert "| retrieval/coco_captions:test | i2t_R@1 |" in run.stdout
