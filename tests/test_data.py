"""Input pipeline: samples stay aligned by key; bad records are skipped and
counted, never shifted against other samples' texts."""

import io
import os

import jax
import msgpack
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from PIL import Image

from alip_jax import mesh as mesh_lib
from alip_jax.data import pipeline, records, tokenizer as tok_lib
from alip_jax.tools import synthetic

NUM_GOOD = 40


def colour(i):
  """A distinct solid colour per sample index (survives crop, flip, JPEG)."""
  return np.array([(37 * i) % 256, (91 * i + 50) % 256, (53 * i + 100) % 256])


def jpeg(rgb, size=24):
  buf = io.BytesIO()
  Image.fromarray(np.full((size, size, 3), rgb, np.uint8)).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def spell(i):
  return " ".join(WORDS[int(d)] for d in str(i))


@pytest.fixture(scope="module")
def aligned_data(tmp_path_factory):
  """40 good records + 5 bad ones, in 2 shards."""
  out = str(tmp_path_factory.mktemp("aligned"))
  good = [dict(key=f"k{i:03d}", image=jpeg(colour(i)), raw_text=f"raw {spell(i)}",
               caption=f"caption {spell(i)}") for i in range(NUM_GOOD)]
  corrupt = dict(key="bad-jpeg", image=jpeg(colour(1))[:60], raw_text="raw one",
                 caption="caption one")  # truncated JPEG
  bad_utf8 = dict(key="bad-utf8", image=jpeg(colour(2)), raw_text=b"raw \xff\xfe two",
                  caption="caption two")
  empty = dict(key="empty-caption", image=jpeg(colour(3)), raw_text="raw three", caption="  ")
  blobs = [records.encode(r) for r in good + [corrupt, bad_utf8, empty]]
  blobs.append(msgpack.packb({"key": "no-caption", "image": jpeg(colour(4)),
                              "raw_text": b"raw four"}, use_bin_type=True))
  blobs.append(b"\xc1 not msgpack")
  order = np.random.default_rng(0).permutation(len(blobs))
  files = []
  for shard, idx in enumerate(np.array_split(order, 2)):
    path = os.path.join(out, f"train-{shard:05d}-of-00002.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    for i in idx:
      writer.write(blobs[i])
    writer.close()
    files.append(path)
  texts = [t for r in good for t in (r["raw_text"], r["caption"])]
  tok_lib.train_sentencepiece(texts * 5, os.path.join(out, "tok.model"), vocab_size=40)
  return files, tok_lib.Tokenizer(os.path.join(out, "tok.model"), 16)


def test_every_sample_keeps_its_own_image_and_texts(aligned_data):
  files, tokenizer = aligned_data
  counter = pipeline.BadRecordCounter()
  # No read-ahead, so the bad-record counts are exact at this point.
  ds = pipeline.train_dataset(files, tokenizer, image_size=16, local_batch=8, seed=1,
                              counter=counter, process_index=0, process_count=1,
                              num_threads=0, prefetch=0)
  it = iter(ds)
  seen = set()
  for _ in range(NUM_GOOD // 8 * 2):  # two epochs
    batch = next(it)
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.uint8
    for key, image, raw, caption in zip(batch["key"], batch["image"], batch["raw_tokens"],
                                        batch["caption_tokens"]):
      i = int(str(key)[1:])
      seen.add(i)
      np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour(i), atol=6)
      assert tokenizer.decode(raw) == f"raw {spell(i)}"
      assert tokenizer.decode(caption) == f"caption {spell(i)}"
  assert seen == set(range(NUM_GOOD))
  # Two epochs of good samples read: each bad record was skipped in epoch 1,
  # and in epoch 2 unless it sorts after that epoch's last good record.
  assert set(counter.counts) == {"corrupt_image", "non_utf8_raw_text", "empty_caption",
                                 "missing_caption", "unreadable_record"}
  assert all(count in (1, 2) for count in counter.counts.values()), counter.counts
  assert counter.total >= 6


def test_processes_read_disjoint_slices(aligned_data):
  files, tokenizer = aligned_data
  keys = []
  for process in range(2):
    ds = pipeline.train_dataset(files, tokenizer, 16, 4, seed=1,
                                counter=pipeline.BadRecordCounter(),
                                process_index=process, process_count=2)
    it = iter(ds)
    keys.append({str(k) for _ in range(4) for k in next(it)["key"]})
  assert not keys[0] & keys[1]


def test_shuffle_is_seeded(aligned_data):
  files, tokenizer = aligned_data

  def first_keys(seed):
    ds = pipeline.train_dataset(files, tokenizer, 16, 8, seed=seed,
                                counter=pipeline.BadRecordCounter(), process_index=0,
                                process_count=1)
    return [str(k) for k in next(iter(ds))["key"]]

  assert first_keys(3) == first_keys(3)
  assert first_keys(3) != first_keys(4)


def test_global_batch_on_8_devices_keeps_rows(aligned_data):
  files, tokenizer = aligned_data
  ds = pipeline.train_dataset(files, tokenizer, 16, 16, seed=0,
                              counter=pipeline.BadRecordCounter(), process_index=0,
                              process_count=1)
  local = next(iter(ds))
  mesh = mesh_lib.make_mesh(dict(data=-1, model=1))
  batch = pipeline.to_global_batch(local, mesh_lib.batch_sharding(mesh))
  assert "key" not in batch
  assert len(batch["image"].sharding.device_set) == 8
  for name in ("image", "raw_tokens", "caption_tokens"):
    np.testing.assert_array_equal(jax.device_get(batch[name]), local[name])


def test_random_resized_crop_box_respects_alip_ranges():
  rng = np.random.default_rng(0)
  for _ in range(200):
    left, top, right, bottom = pipeline.random_resized_crop_box(64, 48, rng)
    w, h = right - left, bottom - top
    assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
    assert 0.65 <= w * h / (64 * 48) <= 1.0
    assert 0.75 <= w / h <= 1.3


def test_tokenizer_pads_truncates_and_keeps_eot(aligned_data):
  _, tokenizer = aligned_data
  short = tokenizer.encode("raw one")
  assert short[0] == tok_lib.SOT_ID and short.dtype == np.int32 and len(short) == 16
  eot = int((short != tok_lib.PAD_ID).sum()) - 1
  assert short[eot] == tok_lib.EOT_ID and not short[eot + 1 :].any()
  long = tokenizer.encode(" ".join(["caption seven eight"] * 20))
  assert long[-1] == tok_lib.EOT_ID and (long != tok_lib.PAD_ID).all()


def test_synthetic_corpus_is_deterministic_and_well_formed(tmp_path):
  cfg = synthetic.CorpusConfig(num_train=60, num_val=10, num_test=20, shards=2, vocab_size=96)
  synthetic.build(str(tmp_path / "a"), cfg)
  synthetic.build(str(tmp_path / "b"), cfg)
  for split in ("train", "val", "test"):
    files_a = records.split_files(str(tmp_path / "a"), split)
    files_b = records.split_files(str(tmp_path / "b"), split)
    assert files_a.num_records == {"train": 60, "val": 10, "test": 20}[split]
    for fa, fb in zip(files_a.files, files_b.files):
      assert open(fa, "rb").read() == open(fb, "rb").read()
  import grain
  test = [records.decode(r) for r in grain.sources.ArrayRecordDataSource(
      records.split_files(str(tmp_path / "a"), "test").files)]
  kinds = {r["meta"]["noise_kind"] for r in test}
  assert kinds <= set(synthetic.NOISE_KINDS) and len(kinds) > 1
  for r in test:
    assert r["captions"] and r["meta"]["label_shape"] in synthetic.SHAPES
    assert r["meta"]["label_color"] in synthetic.COLOR_NAMES
    Image.open(io.BytesIO(r["image"])).verify()


def test_missing_split_names_the_directory_and_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no ArrayRecord shards for split 'train'.*alip_jax.tools.synthetic"):
    records.split_files(str(tmp_path), "train")


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume_exactly(aligned_data):
  """Grain worker processes decode and augment; the filter and batching stay
  in this process, so the batches (and bad-record counts) equal those of
  no workers, and a saved iterator state resumes at the same batch."""
  files, tokenizer = aligned_data

  def batches(workers, count, state=None):
    counter = pipeline.BadRecordCounter()
    it = iter(pipeline.train_dataset(files, tokenizer, 16, 8, seed=2, counter=counter,
                                     process_index=0, process_count=1, num_threads=1,
                                     prefetch=4, workers=workers))
    if state is not None:
      it.set_state(state)
    out = [next(it) for _ in range(count)]
    state = it.get_state()
    it.close()
    return [(list(b["key"]), b["image"].tobytes(), b["raw_tokens"].tobytes()) for b in out], \
        state, counter.total

  want, _, _ = batches(0, 8)
  got, state, bad = batches(2, 5)
  assert got == want[:5]
  assert bad == batches(0, 5)[2] >= 5  # counted here, as they are consumed
  resumed, _, _ = batches(2, 3, state)  # a fresh pipeline, as after a restart
  assert resumed == want[5:]


def test_device_prefetch_keeps_batches_order_and_resume_state(aligned_data):
  """The batches put on the devices ahead of the step are the pipeline's, in
  order; the state a checkpoint saves is that of the last batch handed out
  (not of the read-ahead), so a fresh pipeline resumes at the next batch."""
  files, tokenizer = aligned_data
  sharding = mesh_lib.batch_sharding(mesh_lib.make_mesh(dict(data=-1, model=1)))

  def dataset():
    return pipeline.train_dataset(files, tokenizer, 16, 8, seed=3,
                                  counter=pipeline.BadRecordCounter(), process_index=0,
                                  process_count=1, num_threads=1, prefetch=4)

  def arrays(batch):
    return {k: np.asarray(v) for k, v in batch.items()}

  plain = iter(dataset())
  want = []
  for _ in range(8):
    local = next(plain)
    want.append({**arrays(pipeline.to_global_batch(local, sharding)), "key": local["key"]})
  plain.close()
  it = iter(pipeline.device_prefetch(dataset(), sharding, buffer_size=3))
  got = [next(it) for _ in range(5)]
  assert all(isinstance(v, jax.Array) and v.sharding == sharding
             for k, v in got[0].items() if k != "key")
  assert isinstance(got[0]["key"], np.ndarray)  # host strings, for the trainer's logs
  state = it.get_state()  # the thread has read ahead by now
  it.close()
  resumed = iter(pipeline.device_prefetch(dataset(), sharding, buffer_size=3))
  resumed.set_state(state)
  got += [next(resumed) for _ in range(3)]
  resumed.close()
  assert sorted(got[0]) == sorted(want[0]) == ["caption_tokens", "image", "key", "raw_tokens"]
  for g, w in zip(got, want):
    for k in w:
      np.testing.assert_array_equal(np.asarray(g[k]), w[k])
