"""A tiny set in TFDS `coco_captions` layout and features (NAME/2014/1.1.0,
image + image/id + captions {text, id}), built without TensorFlow or the
network. Image k is a solid colour whose red channel is 30·k; its captions
are "picture number k", except that image 2 has a sixth caption naming
another picture, which the 5-caption protocol must leave out."""

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NUM_IMAGES = 7  # no batch size in the tests divides it


def picture(index: int, size=(40, 30)) -> Image.Image:
  return Image.new("RGB", size, (30 * index, 90, 160))


def captions_of(index: int) -> list[str]:
  captions = [f"picture number {index}"] * 5
  return captions + ["picture number 0"] if index == 2 else captions


def jpeg_bytes(image: Image.Image) -> io.BytesIO:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=95)
  buffer.seek(0)
  return buffer


with tfds.core.registered.skip_registration():  # TFDS registers its own coco_captions

  class CocoCaptions(tfds.core.GeneratorBasedBuilder):
    name = "coco_captions"
    VERSION = tfds.core.Version("1.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]

    def _info(self):
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(encoding_format="jpeg"),
          "image/id": np.int64,
          "captions": tfds.features.Sequence({"text": np.str_, "id": np.int64})}))

    def _split_generators(self, dl_manager):
      del dl_manager  # nothing to download
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for index in range(NUM_IMAGES):
        captions = captions_of(index)
        yield index, {"image": jpeg_bytes(picture(index)), "image/id": 1000 + index,
                      "captions": {"text": captions, "id": list(range(len(captions)))}}


def build(data_dir: str) -> str:
  CocoCaptions(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir
