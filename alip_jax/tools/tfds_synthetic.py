"""`alip_synthetic_colors`: the embedded corpus's held-out images as a TFDS
image-classification set, so the demo evaluates zero-shot classification and
the linear probe through the same TFDS data-source path as cifar10 or
imagenet2012, offline.

Label: the colour of the largest object (meta.label_color). Splits: 'train'
← the corpus's val split, 'test' ← its test split. The corpus directory is
TFDS's manual_dir; images keep their JPEG bytes. It is also a small example
of wrapping your own labelled images as a TFDS set:

  python -m alip_jax.tools.tfds_synthetic --corpus runs/demo/data --out runs/demo/tfds
"""

from __future__ import annotations

import argparse
import io

import grain

from alip_jax import extras

tfds = extras.require("tensorflow_datasets", "The TFDS copy of the demo's corpus")


from alip_jax.data import records
from alip_jax.tools import synthetic

NAME = "alip_synthetic_colors"
SPLITS = {"train": "val", "test": "test"}  # TFDS split ← corpus split


class AlipSyntheticColors(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Build the embedded corpus (python -m alip_jax.tools.synthetic --out DIR) and pass DIR "
      "as the manual directory (prepare() below does).")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(names=list(synthetic.COLOR_NAMES)),
        "key": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    corpus = str(dl_manager.manual_dir)
    return {split: self._generate_examples(records.split_files(corpus, source).files)
            for split, source in SPLITS.items()}

  def _generate_examples(self, files):
    source = grain.sources.ArrayRecordDataSource(files)
    for index in range(len(source)):
      record = records.decode(source[index])
      yield record["key"], {"image": io.BytesIO(record["image"]),
                            "label": record["meta"]["label_color"], "key": record["key"]}


def prepare(corpus_dir: str, tfds_dir: str) -> None:
  """Prepares the set in ArrayRecord format under `tfds_dir` (once)."""
  tfds.disable_progress_bar()
  builder = AlipSyntheticColors(data_dir=tfds_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=corpus_dir))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--corpus", required=True, help="a built embedded corpus")
  parser.add_argument("--out", required=True, help="TFDS data directory")
  args = parser.parse_args()
  prepare(args.corpus, args.out)
  print(f"{NAME} prepared in {args.out}")


if __name__ == "__main__":
  main()
