"""Input from the web: every image format and oddity web crawls serve, the
text rules, and truncated or corrupt ArrayRecord shards — each decoded,
cleaned, or skipped and counted with its key, file or record index."""

import io
import os

import grain
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from alip_jax.data import pipeline, records, web
from test_data import spell


def encoded(image, fmt, **kwargs):
  buf = io.BytesIO()
  image.save(buf, format=fmt, **kwargs)
  return buf.getvalue()


RED = (220, 30, 30)


def web_images():
  """name → (bytes, expected size (w, h), expected mean RGB)."""
  rgb = Image.new("RGB", (40, 20), RED)
  exif = Image.Exif()
  exif[web.EXIF_ORIENTATION] = 6  # "rotate 90° clockwise to display"
  transparent = Image.new("RGBA", (16, 16), (0, 0, 255, 0))  # invisible blue
  palette = Image.new("P", (16, 16), 0)
  palette.putpalette([0, 0, 0] * 256)
  sixteen = Image.fromarray(np.full((8, 8), 65535, np.uint16))
  return {
      "baseline.jpg": (encoded(rgb, "JPEG", quality=95), (40, 20), RED),
      "progressive.jpg": (encoded(rgb, "JPEG", quality=95, progressive=True), (40, 20), RED),
      "grayscale.jpg": (encoded(Image.new("L", (10, 10), 128), "JPEG"), (10, 10), (128,) * 3),
      "cmyk.jpg": (encoded(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG", quality=95),
                   (10, 10), (255, 0, 0)),
      "exif_rotated.jpg": (encoded(rgb, "JPEG", quality=95, exif=exif), (20, 40), RED),
      "alpha.png": (encoded(transparent, "PNG"), (16, 16), (255, 255, 255)),
      "palette_transparent.png": (encoded(palette, "PNG", transparency=0), (16, 16),
                                  (255, 255, 255)),
      "16bit.png": (encoded(sixteen, "PNG"), (8, 8), (255, 255, 255)),
      "lossless.webp": (encoded(rgb, "WEBP", lossless=True), (40, 20), RED),
      "first_frame.gif": (encoded(rgb.convert("P"), "GIF"), (40, 20), RED),
  }


@pytest.mark.parametrize("name", sorted(web_images()))
def test_web_image_formats_decode_to_rgb(name):
  data, size, mean = web_images()[name]
  image = web.load_image(data)
  assert image.mode == "RGB" and image.size == size
  np.testing.assert_allclose(np.asarray(image).reshape(-1, 3).mean(0), mean, atol=8)


def test_undecodable_and_oversized_images_are_skipped_with_their_key():
  good = web_images()["baseline.jpg"][0]
  cases = {"truncated": good[:len(good) // 2], "not-an-image": b"<html>404</html>",
           "huge": encoded(Image.new("RGB", (100, 100)), "PNG")}
  for key, image in cases.items():
    rec = pipeline.decode_record(records.encode(dict(key=key, image=image, raw_text="a",
                                                     caption="b")), max_pixels=5000)
    assert rec["key"] == key
    assert rec["error"] == ("image_too_large" if key == "huge" else "corrupt_image"), rec


@pytest.mark.parametrize("text, want", [
    ("Fish &amp; Chips &#39;n&#39; more", "Fish & Chips 'n' more"),
    ("  two\tlines\nand\x00nul\u200b ", "two lines and nul"),
    ("&nbsp;&nbsp;", ""),  # only whitespace once decoded → the record is skipped
])
def test_text_rules(text, want):
  assert web.clean_text(text) == want


def test_whitespace_only_after_cleaning_is_an_empty_text():
  rec = pipeline.decode_record(records.encode(dict(
      key="k", image=web_images()["baseline.jpg"][0], raw_text="&nbsp; \x07", caption="c")))
  assert rec["error"] == "empty_raw_text"


def write_shard(path, blobs):
  writer = ArrayRecordWriter(path, "group_size:1")
  for blob in blobs:
    writer.write(blob)
  writer.close()
  return path


@pytest.fixture
def shards(tmp_path):
  image = web_images()["baseline.jpg"][0]
  blobs = [records.encode(dict(key=f"k{i:02d}", image=image, raw_text=f"raw {spell(i)}",
                               caption=f"caption {spell(i)}")) for i in range(30)]
  good = write_shard(str(tmp_path / "train-00000-of-00003.array_record"), blobs[:10])
  data = open(write_shard(str(tmp_path / "full.array_record"), blobs[10:20]), "rb").read()
  truncated = str(tmp_path / "train-00001-of-00003.array_record")
  with open(truncated, "wb") as f:
    f.write(data[:len(data) * 2 // 3])
  corrupt = str(tmp_path / "train-00002-of-00003.array_record")
  data = open(write_shard(corrupt, blobs[20:]), "rb").read()
  # Flip 16 bytes inside one record's chunk: the first offset (from the file's
  # start, in steps) where the shard still opens but some record does not read.
  for offset in range(64, len(data) // 2, 97):
    damaged = bytearray(data)
    damaged[offset:offset + 16] = bytes(b ^ 0xFF for b in damaged[offset:offset + 16])
    with open(corrupt, "wb") as f:
      f.write(damaged)
    try:
      source = grain.sources.ArrayRecordDataSource([corrupt])
      [source[i] for i in range(len(source))]
    except RuntimeError as e:
      if "RiegeliPostscript" not in str(e):
        break  # opens, and a record fails to read
  else:
    pytest.fail("no damage found that leaves the shard openable")
  os.remove(tmp_path / "full.array_record")
  return good, truncated, corrupt


def test_truncated_shard_is_named_or_skipped(shards):
  good, truncated, _ = shards
  with pytest.raises(records.CorruptShardError, match=f"{truncated}: not a readable"):
    records.ShardedSource([good, truncated])
  source = records.ShardedSource([good, truncated], skip_bad_shards=True)
  assert len(source) == 10 and source.skipped_shards == [truncated]


def test_corrupt_record_is_named_with_its_index_or_counted(shards):
  good, _, corrupt = shards
  source = records.ShardedSource([good, corrupt])
  assert len(source) == 20
  unreadable = []
  for index in range(20):
    try:
      source[index]
    except records.CorruptShardError as e:
      assert f"{corrupt}: record {index - 10} cannot be read" in str(e)
      unreadable.append(index)
  assert unreadable and all(i >= 10 for i in unreadable)

  # Skip mode: the same records come back as UNREADABLE; the pipeline counts
  # them and every batch still pairs each image with its own texts.
  counter = pipeline.BadRecordCounter()
  from alip_jax.data import tokenizer as tok_lib
  model = os.path.join(os.path.dirname(corrupt), "tok.model")
  tok_lib.train_sentencepiece([f"raw {spell(i)} caption {spell(i)}" for i in range(30)] * 3,
                              model, vocab_size=40)
  tokenizer = tok_lib.Tokenizer(model, 16)
  ds = pipeline.train_dataset([good, corrupt], tokenizer, 16, 4, seed=0, counter=counter,
                              process_index=0, process_count=1, num_threads=0, prefetch=0,
                              skip_bad_shards=True)
  it = iter(ds)
  keys = []
  for _ in range(2 * (20 - len(unreadable)) // 4):  # 2 epochs: all of epoch 1 consumed
    batch = next(it)
    for key, raw in zip(batch["key"], batch["raw_tokens"]):
      assert tokenizer.decode(raw) == f"raw {spell(int(str(key)[1:]))}"
      keys.append(str(key))
  # Source index i holds k0i (first shard) or k(10 + i) (second shard).
  assert set(keys) == {f"k{i if i < 10 else i + 10:02d}" for i in range(20)
                       if i not in unreadable}
  assert counter.counts["unreadable_record"] >= len(unreadable)


def test_large_jpegs_decode_at_a_reduced_scale_that_covers_min_side():
  photo = Image.new("RGB", (700, 500), RED)
  data = encoded(photo, "JPEG", quality=95)
  assert web.load_image(data).size == (700, 500)
  small = web.load_image(data, min_side=224)  # 1/2 scale: shorter side 250 ≥ 224
  assert small.size == (350, 250) and small.mode == "RGB"
  np.testing.assert_allclose(np.asarray(small).reshape(-1, 3).mean(0), RED, atol=8)
  assert web.load_image(data, min_side=300).size == (700, 500)  # 1/2 would be < 300
  png = encoded(photo, "PNG")
  assert web.load_image(png, min_side=100).size == (700, 500)  # JPEG only
