"""python -m alip_jax.tools.build on what people have: an img2dataset tar, a
Parquet table with image bytes, a CSV and a JSONL with image paths, caption
files keyed by sample key — with every kind of bad row counted by reason,
each sample's image and texts kept together, parallel workers, resumable
shards, and a trainer run on the result."""

import glob
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from alip_jax import train
from alip_jax.data import pipeline, records
from alip_jax.tools import build
from conftest import tiny_config
from test_data import colour, spell
from test_end_to_end import ROOT


def image_bytes(i, fmt="JPEG", size=(40, 30)):
  buf = io.BytesIO()
  Image.new("RGB", size, tuple(int(v) for v in colour(i))).save(buf, format=fmt, quality=95)
  return buf.getvalue()


def add(archive, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Samples 0–39 spread over four inputs, plus bad rows of each kind.
  Sample i: image colour(i), raw text 'raw <i spelled>', caption
  'caption <i spelled>' (sample 3 has two captions; 5 and 6 none)."""
  d = tmp_path_factory.mktemp("inputs")
  with tarfile.open(d / "00000.tar", "w") as archive:  # img2dataset layout
    for i in range(10):
      fmt = ("JPEG", "PNG", "WEBP")[i % 3]
      add(archive, f"{i:09d}.{fmt.lower().replace('jpeg', 'jpg')}", image_bytes(i, fmt))
      add(archive, f"{i:09d}.txt", f"raw {spell(i)}".encode())
      add(archive, f"{i:09d}.json", json.dumps({"url": f"http://x/{i}", "key": f"{i:09d}"}).encode())
    add(archive, "bad-image.jpg", image_bytes(50)[:100])
    add(archive, "bad-image.txt", b"raw fifty")
    add(archive, "bad-utf8.jpg", image_bytes(51))
    add(archive, "bad-utf8.txt", b"raw \xff\xfe")
    add(archive, "no-text.jpg", image_bytes(52))
    add(archive, "empty-text.jpg", image_bytes(53))
    add(archive, "empty-text.txt", b" &nbsp; ")
    add(archive, "no-image.txt", b"raw fifty four")
  pq.write_table(pa.table({
      "key": [f"{i:09d}" for i in range(10, 20)] + ["000000001"],  # the last: a duplicate
      "image": [{"bytes": image_bytes(i), "path": None} for i in range(10, 20)]
               + [{"bytes": image_bytes(1), "path": None}],
      "text": [f"raw {spell(i)}" for i in range(10, 21)]}), d / "table.parquet")
  os.makedirs(d / "images")
  for i in range(20, 40):
    with open(d / "images" / f"{i}.png", "wb") as f:
      f.write(image_bytes(i, "PNG"))
  with open(d / "table.csv", "w") as f:
    f.write("key,image,text\n" + "".join(
        f"{i:09d},images/{i}.png,raw {spell(i)}\n" for i in range(20, 30)))
    f.write("missing-file,images/nope.png,raw sixty\n")
  with open(d / "table.jsonl", "w") as f:
    for i in range(30, 40):
      f.write(json.dumps({"key": f"{i:09d}", "image": f"images/{i}.png",
                          "text": f"raw {spell(i)}"}) + "\n")
    f.write("{not json\n")
  captions = [{"key": f"{i:09d}", "caption": f"caption {spell(i)}"}
              for i in range(40) if i not in (5, 6)]
  captions += [{"key": "000000003", "caption": "caption three again"}]
  captions += [{"key": k, "caption": "caption x"} for k in
               ("bad-image", "bad-utf8", "empty-text", "no-image", "missing-file")]
  with open(d / "captions.jsonl", "w") as f:
    f.writelines(json.dumps(c) + "\n" for c in captions[:25])
  pq.write_table(pa.Table.from_pylist(captions[25:]), d / "captions.parquet")
  return d


def read_back(out, split="train"):
  source = records.ShardedSource(records.split_files(out, split).files)
  return {rec["key"]: rec for rec in (pipeline.decode_record(source[i])
                                      for i in range(len(source)))}


def test_build_counts_every_bad_row_and_keeps_samples_whole(inputs, tmp_path):
  out = str(tmp_path / "built")
  command = [sys.executable, "-m", "alip_jax.tools.build", "--out", out,
             "--input", str(inputs / "*.tar"), "--input", str(inputs / "table.{parquet,csv,jsonl}"),
             "--captions", str(inputs / "captions.jsonl"),
             "--captions", str(inputs / "captions.parquet"),
             "--num_shards", "3", "--direct_num_workers", "2", "--resize", "20", "--vocab_size", "60"]
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  stats = json.load(open(os.path.join(out, "stats.json")))["train"]
  assert stats["written"] == 38  # 40 samples, less 5 and 6 (no caption)
  assert stats["skipped"] == {"missing_caption": 2, "undecodable_image": 1,
                              "non_utf8_raw_text": 1, "empty_raw_text": 2,
                              "missing_image": 2, "duplicate_key": 1,
                              "unreadable_input_row": 1}
  assert sum(s["records"] for s in stats["shards"].values()) == 38 and len(stats["shards"]) == 3
  assert json.load(open(os.path.join(out, "counts.json")))["splits"]["train"] == 38

  samples = read_back(out)
  assert set(samples) == {f"{i:09d}" for i in range(40) if i not in (5, 6)}
  for key, rec in samples.items():
    i = int(key)
    assert rec["raw_text"] == f"raw {spell(i)}" and rec["caption"] == f"caption {spell(i)}"
    assert min(rec["image"].size) == 20  # resized at build time (40×30 → 27×20)
    np.testing.assert_allclose(np.asarray(rec["image"]).reshape(-1, 3).mean(0), colour(i), atol=8)
  assert samples["000000004"]["meta"]["url"] == "http://x/4"

  # Re-running reuses every finished shard; a resumed build (one shard lost,
  # one left half-written) writes the same bytes again.
  shards = sorted(glob.glob(os.path.join(out, "train-*.array_record")))
  first = {p: open(p, "rb").read() for p in shards}
  rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0 and '"reused_shards": 3' in rerun.stdout, rerun.stderr[-2000:]
  os.remove(shards[0])
  os.rename(shards[1], shards[1] + ".incomplete")
  os.remove(os.path.join(out, ".build", os.path.basename(shards[1]) + ".json"))
  resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0 and '"reused_shards": 1' in resumed.stdout, resumed.stderr[-2000:]
  assert {p: open(p, "rb").read() for p in shards} == first


def test_missing_captions_can_fall_back_to_raw_text(inputs, tmp_path):
  out = str(tmp_path / "fallback")
  stats = build.build([str(inputs / "00000.tar")], build.BuildOptions(
      out=out, missing_caption="raw"), [str(inputs / "captions.jsonl")], vocab_size=40)
  assert stats["caption_from_raw"] == 2 and "caption_from_raw" not in stats["skipped"]
  samples = read_back(out)
  assert samples["000000005"]["caption"] == samples["000000005"]["raw_text"] == "raw five"
  assert samples["000000005"]["meta"]["caption_from_raw"] is True


@pytest.mark.slow
def test_trainer_runs_on_built_data_with_references_for_retrieval(inputs, tmp_path):
  out = str(tmp_path / "data")
  captions = [str(inputs / "captions.jsonl"), str(inputs / "captions.parquet")]
  files = [str(inputs / "00000.tar"), str(inputs / "table.parquet"), str(inputs / "table.csv"),
           str(inputs / "table.jsonl")]
  build.build(files, build.BuildOptions(out=out, num_shards=2), captions, vocab_size=60)
  build.build(files[:1], build.BuildOptions(out=out, split="test", references=True), captions)
  assert read_back(out, "test")["000000003"]["captions"] == [b"caption three",
                                                             b"caption three again"]
  config = tiny_config()
  config.data.dir = out
  config.train.steps, config.train.batch_size, config.eval.batch_size = 2, 8, 8
  result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result.step == 2 and result.eval["num_images"] == 8
  assert result.eval["num_texts"] == 9  # sample 3 has two references


TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(not TORCH_PYTHON and os.environ.get("ALIP_SKIP_TORCH") == "1",
                    reason="ALIP_SKIP_TORCH=1 and no ALIP_TORCH_PYTHON")
def test_captioner_stage_captions_every_image_and_feeds_the_build(inputs, tmp_path):
  if not TORCH_PYTHON:  # the torch venv is part of the test environment
    pytest.fail("ALIP_TORCH_PYTHON is not set: run the tests through tests/run.sh, which makes "
                "the torch venv, or set ALIP_SKIP_TORCH=1")
  model = str(tmp_path / "tiny_blip")
  here = os.path.dirname(os.path.abspath(__file__))
  subprocess.run([TORCH_PYTHON, os.path.join(here, "tiny_captioner.py"), model], check=True,
                 capture_output=True, timeout=300)
  out = str(tmp_path / "captioned")
  command = [sys.executable, "-m", "alip_jax.tools.build", "--out", out,
             "--input", str(inputs / "00000.tar"), "--captioner", model,
             "--captioner_python", TORCH_PYTHON, "--captioner_args", "--batch_size 3 --max_new_tokens 6",
             "--vocab_size", "40"]
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(os.path.join(out, "captions-train.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # Every decodable image: 10 samples + bad-utf8, no-text and empty-text
  # (their texts are the builder's business); not bad-image, not no-image.
  assert sorted(r["key"] for r in rows) == sorted(
      [f"{i:09d}" for i in range(10)] + ["bad-utf8", "no-text", "empty-text"])
  assert all(len(r["caption"].split()) == 6 for r in rows)
  stats = json.load(open(os.path.join(out, "stats.json")))["train"]
  # Only bad-image lacks a caption (no captioner could read it); the builder
  # checks captions before it decodes.
  assert stats["written"] == 10 and stats["skipped"]["missing_caption"] == 1
  samples = read_back(out)
  captions = {r["key"]: r["caption"] for r in rows}
  assert all(samples[k]["caption"] == captions[k] for k in samples)

  # Re-running captions nothing again.
  rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0 and '"already_captioned": 13' in rerun.stdout + rerun.stderr
