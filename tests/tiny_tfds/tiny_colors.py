"""`tiny_colors`: noisy 24×24 images of three colours, labelled by colour;
37 test images (a count no batch size here divides) and 60 training images.
Images are handed to TFDS as PNG bytes, so building needs no TensorFlow."""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CLASSES = ["red", "green", "blue"]
SPLIT_SIZES = {"train": 60, "test": 37}


def image_of(label: int, rng: np.random.Generator) -> np.ndarray:
  image = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
  image[..., label] = rng.integers(180, 256, (24, 24))
  return image


class TinyColors(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(24, 24, 3)),
        "label": tfds.features.ClassLabel(names=CLASSES)}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    rng = np.random.default_rng(0 if split == "train" else 1)
    for index in range(SPLIT_SIZES[split]):
      label = index % 3
      png = io.BytesIO()
      Image.fromarray(image_of(label, rng)).save(png, format="PNG")
      png.seek(0)
      yield index, {"image": png, "label": label}


def build(data_dir: str) -> None:
  TinyColors(data_dir=data_dir, file_format="array_record").download_and_prepare()
