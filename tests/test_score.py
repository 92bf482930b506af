"""alip_jax.score: the gate values of the train step, the same on 1 and 8
devices and on 2 processes, resumable, bad records counted; and the report."""

import html.parser
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import alip_jax
from alip_jax import losses, mesh as mesh_lib
from alip_jax.checkpointing import lease as lease_lib
from alip_jax.curation import provenance, report, scoring as score
from alip_jax.data import records
from alip_jax.models import two_towers
from conftest import two_step_run
from test_end_to_end import ROOT
from test_multihost import free_port


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
  """A 2-step ALIP run on the tiny corpus."""
  workdir, config, result = two_step_run(tiny_corpus, tmp_path_factory, mesh=dict(data=-1))
  return workdir, tiny_corpus, config, result.gates


def test_scores_equal_the_train_steps_gate_values(run, tmp_path):
  """The same 16 records through the trainer's loss (the objective's) and
  through score_split: identical cosines and weights."""
  workdir, data, config, _ = run
  loaded = alip_jax.load(workdir)
  source = records.ShardedSource(records.split_files(data, "test").files)
  shard = str(tmp_path / "batch-00000-of-00001.array_record")
  records.write_shard(shard, (records.decode(source[i]) for i in range(16)))
  prepared = [score.prepare(source[i], loaded.tokenizer, loaded.image_size) for i in range(16)]
  stack = lambda name: np.stack([p[name] for p in prepared])
  embeddings, _ = loaded.model.apply({"params": loaded.params}, stack("image"),
                                     {"raw": stack("raw"), "caption": stack("caption")})
  logit_params = {k: loaded.params[k] for k in two_towers.LOGIT_PARAMS if k in loaded.params}
  assert config.loss.alip.update_before_weights  # weights at the means updated by this batch
  # Running means at the batch's mean cosines (a 2-step run's are still
  # near H₀ = 1): then the gates both clip at 1 and weight below it.
  objective = losses.get(config.loss)
  sims = objective.loss(embeddings, logit_params, loaded.gate_state)[2]
  gate_state = {h: np.mean(sims[s]) for h, s in (("h_tc", "s_tc"), ("h_xt", "s_xt"),
                                                 ("h_xc", "s_xc"))}
  _, new_gates, metrics = objective.loss(embeddings, logit_params, gate_state)
  means = [str(float(new_gates[k])) for k in ("h_tc", "h_xt", "h_xc")]
  summary = score.score_split(loaded, [shard], str(tmp_path / "scores"), batch_size=16,
                              means=means, progress=False)
  got = score.read_scores(str(tmp_path / "scores"))
  assert summary["scored"] == 16 and summary["means_source"] == "--means"
  assert list(got["key"]) == [p["key"] for p in prepared]
  for column, metric in (("s_tc", "s_tc"), ("s_xt", "s_xt"), ("s_xc", "s_xc"),
                         ("clip_score", "s_xt"), ("w_sample", "weight_sample"),
                         ("w_raw_pair", "weight_raw_pair"),
                         ("w_caption_pair", "weight_caption_pair")):
    np.testing.assert_allclose(got[column], np.asarray(metrics[metric]), rtol=1e-5, atol=1e-6,
                               err_msg=column)
  assert (got["w_sample"] < 1).any() and (got["w_sample"] == 1).any()


def test_one_device_and_eight_give_the_same_scores_and_resume(run, tmp_path):
  workdir, data, _, gates = run
  files = records.split_files(data, "test").files  # 200 records
  want_dir, got_dir = str(tmp_path / "one"), str(tmp_path / "eight")
  one = score.score_split(alip_jax.load(workdir), files, want_dir, batch_size=48,
                          progress=False)
  assert one["records"] == one["scored"] == 200 and one["bad"] == {}
  assert one["means"] == gates and "running means" in one["means_source"]
  eight = alip_jax.load(workdir, mesh=mesh_lib.make_mesh(dict(data=4, fsdp=1, model=2)))
  # Interrupted after 2 of 5 chunks (48 records each), then resumed.
  assert score.score_split(eight, files, got_dir, batch_size=48, chunk_steps=1,
                           progress=False, stop_after_chunks=2) is None
  assert sorted(os.listdir(os.path.join(got_dir, "chunks", "00000-of-00001"))) == [
      "chunk-00000.npz", "chunk-00001.npz"]
  resumed = score.score_split(eight, files, got_dir, batch_size=48, chunk_steps=1,
                              progress=False)
  assert resumed["scored"] == 200 and resumed["records_per_s"] > 0
  want, got = score.read_scores(want_dir), score.read_scores(got_dir)
  assert list(got["index"]) == list(range(200))
  for column in score.COLUMNS:
    if got[column].dtype.kind == "f":
      np.testing.assert_allclose(got[column], want[column], rtol=1e-6, atol=1e-6, err_msg=column)
    else:
      assert list(got[column]) == list(want[column]), column


def test_bad_records_are_counted_by_reason(run, tmp_path):
  workdir, data, _, _ = run
  source = records.ShardedSource(records.split_files(data, "test").files)
  good = [records.decode(source[i]) for i in range(10)]
  bad = [dict(good[0], key="bad-utf8", raw_text=b"\xff\xfe broken"),
         dict(good[1], key="bad-image", image=b"not a jpeg"),
         dict(good[2], key="bad-empty", caption=b"   ")]
  shard = str(tmp_path / "mixed-00000-of-00001.array_record")
  records.write_shard(shard, good[:4] + bad + good[4:])
  summary = score.score_split(alip_jax.load(workdir), [shard], str(tmp_path / "scores"),
                              batch_size=8, means=["0.5", "0.2", "0.2"], progress=False)
  assert summary["records"] == 13 and summary["scored"] == 10
  assert summary["bad"] == {"non_utf8_raw_text": 1, "corrupt_image": 1,
                            "empty_caption": 1}, summary["bad"]
  table = score.read_scores(str(tmp_path / "scores"))
  assert list(table["key"]) == [g["key"] for g in good]
  assert list(table["index"]) == [0, 1, 2, 3, 7, 8, 9, 10, 11, 12]


class _Parser(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.images, self.rows = [], 0

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.images.append(dict(attrs)["src"])
    self.rows += tag == "tr"


def check_report(directory, scored, n):
  for name in ("hist_s_tc.png", "hist_w_sample.png", "scatter.png"):
    with open(os.path.join(directory, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(os.path.join(directory, name)) as image:
      image.load()
      assert image.size[0] >= 400 and image.size[1] >= 300
  parser = _Parser()
  with open(os.path.join(directory, "index.html"), encoding="utf-8") as f:
    page = f.read()
  parser.feed(page)
  parser.close()
  # 3 plots + 2·n thumbnails, all embedded.
  assert len(parser.images) == 3 + 2 * n
  assert all(src.startswith("data:image/png;base64,") for src in parser.images)
  assert f"{scored} scored records" in page


def test_report_files_exist_and_parse(run, tmp_path):
  workdir, data, _, _ = run
  files = records.split_files(data, "test").files
  out = str(tmp_path / "scores")
  summary = score.score_split(alip_jax.load(workdir), files, out, batch_size=48, progress=False)
  paths = report.write_report(score.read_scores(out), files, str(tmp_path / "report"), 5, summary)
  assert sorted(os.path.basename(p) for p in paths) == [
      "hist_s_tc.png", "hist_w_sample.png", "index.html", "scatter.png"]
  check_report(str(tmp_path / "report"), 200, 5)


@pytest.mark.slow
def test_two_processes_score_their_slices(run, tmp_path):
  """`python -m alip_jax.score` on 2 processes × 4 devices: one part each,
  together the single-process scores; process 0 writes the report."""
  workdir, data, _, _ = run
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  out = str(tmp_path / "two")
  command = lambda i: [sys.executable, "-m", "alip_jax.score",
                       f"--model={workdir}", f"--data={data}", "--split=test", f"--out={out}",
                       "--batch_size=48", f"--report={out}/report", "--report_n=3",
                       f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                       f"--process_id={i}"]
  processes = [subprocess.Popen(command(i), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert sorted(f for f in os.listdir(out) if f.endswith(".parquet")) == [
      "scores-00000-of-00002.parquet", "scores-00001-of-00002.parquet"]
  summary = json.loads(outputs[0][0][outputs[0][0].index("{"):outputs[0][0].rindex("}") + 1])
  assert summary["processes"] == 2 and summary["scored"] == 200
  single = str(tmp_path / "one")
  score.score_split(alip_jax.load(workdir), records.split_files(data, "test").files, single,
                    batch_size=48, progress=False)
  want, got = score.read_scores(single), score.read_scores(out)
  assert list(got["key"]) == list(want["key"])
  for column in ("s_tc", "s_xt", "s_xc", "w_sample", "w_raw_pair", "w_caption_pair"):
    np.testing.assert_allclose(got[column], want[column], rtol=1e-5, atol=1e-6, err_msg=column)
  check_report(os.path.join(out, "report"), 200, 3)


def test_score_filter_and_report_on_a_split_built_from_tars(run, tmp_path):
  """A webdataset tar through alip_jax.tools.build, scored with imported
  weights (no running means: the split's own), filtered, reported."""
  import io
  import tarfile
  from alip_jax.curation import filtering
  from alip_jax.tools import build
  workdir, _, _, _ = run
  tar = str(tmp_path / "00000.tar")
  with tarfile.open(tar, "w") as archive:
    for i in range(12):
      buf = io.BytesIO()
      Image.new("RGB", (48, 40), (20 * i, 100, 200 - 10 * i)).save(buf, format="JPEG")
      for name, data in ((f"{i:04d}.jpg", buf.getvalue()), (f"{i:04d}.txt", f"photo {i}".encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
  data = str(tmp_path / "built")
  captions = str(tmp_path / "captions.jsonl")
  with open(captions, "w") as f:
    f.writelines(json.dumps({"key": f"{i:04d}", "caption": f"a colour swatch number {i}"}) + "\n"
                 for i in range(12))
  build.build([tar], build.BuildOptions(out=data), [captions], vocab_size=40)
  alip_jax.export(alip_jax.load(workdir), str(tmp_path / "hf"))
  loaded = alip_jax.load(str(tmp_path / "hf"))
  assert loaded.gate_state is None
  files = records.split_files(data, "train").files
  summary = score.score_split(loaded, files, str(tmp_path / "scores"), batch_size=8,
                              progress=False)
  table = score.read_scores(str(tmp_path / "scores"))
  assert summary["scored"] == 12 and summary["means_source"] == "the split's own means"
  np.testing.assert_allclose(summary["means"]["h_tc"], table["s_tc"].mean(), rtol=1e-5)
  assert set(table["noise_kind"]) == {""}
  stats = filtering.filter_split(str(tmp_path / "scores"), data, "train", str(tmp_path / "kept"),
                                 top_fraction=0.5, by="clip_score", shards=2)
  assert stats["kept"] == 6 and stats["noise_kind"] == {"unknown": {"kept": 6, "dropped": 6}}
  report.write_report(table, files, str(tmp_path / "report"), 4, summary)
  check_report(str(tmp_path / "report"), 12, 4)


def damage_one_record(path):
  """Flips bytes inside the shard at `path` until it still opens but a
  record does not read (a chunk failing its hash); returns those records."""
  import grain
  data = open(path, "rb").read()
  for offset in range(64, len(data) // 2, 97):
    damaged = bytearray(data)
    damaged[offset:offset + 16] = bytes(b ^ 0xFF for b in damaged[offset:offset + 16])
    with open(path, "wb") as f:
      f.write(damaged)
    try:
      source = grain.sources.ArrayRecordDataSource([path])
    except RuntimeError:
      continue
    unreadable = []
    for i in range(len(source)):
      try:
        source[i]
      except RuntimeError:
        unreadable.append(i)
    if unreadable:
      return unreadable
  pytest.fail("no damage found that leaves the shard openable")


def test_unreadable_records_and_a_truncated_shard_are_counted(run, tmp_path):
  """scored + bad = records, with a record failing its chunk hash (always
  counted) and a truncated shard (an error naming --skip_bad_shards, or with
  it left out and its records counted from counts.json)."""
  workdir, data, _, _ = run
  source = records.ShardedSource(records.split_files(data, "test").files)
  paths = [str(tmp_path / f"t-0000{s}-of-00003.array_record") for s in range(3)]
  for s, path in enumerate(paths):
    records.write_shard(path, (records.decode(source[10 * s + i]) for i in range(10)))
  unreadable = damage_one_record(paths[1])
  with open(paths[2], "r+b") as f:
    f.truncate(os.path.getsize(paths[2]) // 2)
  loaded = alip_jax.load(workdir)
  counted = score.score_split(loaded, paths[:2], str(tmp_path / "no_flag"), batch_size=8,
                              progress=False)  # records: counted, flag or not
  assert counted["bad"] == {"unreadable_record": len(unreadable)}
  assert counted["scored"] + len(unreadable) == counted["records"] == 20
  with pytest.raises(records.CorruptShardError, match=f"{paths[2]}: .* set --skip_bad_shards"):
    score.score_split(loaded, paths, str(tmp_path / "refused"), batch_size=8, progress=False)
  summary = score.score_split(loaded, paths, str(tmp_path / "scores"), batch_size=8,
                              chunk_steps=1, progress=False, skip_bad_shards=True,
                              expected_records=30)
  assert summary["records"] == 30 and summary["skipped_shards"] == [paths[2]]
  assert summary["bad"] == {"unreadable_record": len(unreadable), "unreadable_shard": 10}
  assert summary["scored"] == 20 - len(unreadable)
  assert sorted(score.read_scores(str(tmp_path / "scores"))["index"]) == [
      i for i in range(20) if i - 10 not in unreadable]


def test_a_rerun_with_another_model_is_refused_unless_overwrite(run, tmp_path):
  """An interrupted --out, re-run with other weights: refused, nothing
  written; with --overwrite every row is the new model's."""
  import dataclasses
  workdir, data, _, _ = run
  files = records.split_files(data, "test").files
  loaded = alip_jax.load(workdir)
  other = dataclasses.replace(loaded, params=jax.tree.map(lambda x: x * 1.01, loaded.params))
  out = str(tmp_path / "scores")
  assert score.score_split(loaded, files, out, batch_size=48, chunk_steps=1, progress=False,
                           stop_after_chunks=2) is None
  before = sorted(os.walk(out))
  with pytest.raises(provenance.OutputMismatch, match="model.weights_sha256: '"):
    score.score_split(other, files, out, batch_size=48, chunk_steps=1, progress=False)
  with pytest.raises(provenance.OutputMismatch, match=r"means.h_tc: 0.9\d+ → 0.5"):
    score.score_split(loaded, files, out, batch_size=48, chunk_steps=1, progress=False,
                      means=["0.5", "0.2", "0.2"])
  assert sorted(os.walk(out)) == before
  summary = score.score_split(other, files, out, batch_size=48, chunk_steps=1, progress=False,
                              overwrite=True)
  assert summary["model"]["weights_sha256"] == provenance.weights_digest(other.params)
  assert summary["model"]["source"] == workdir and summary["model"]["step"] == 2
  fresh = score.score_split(other, files, str(tmp_path / "fresh"), batch_size=48,
                            progress=False)
  got, want = score.read_scores(out), score.read_scores(str(tmp_path / "fresh"))
  assert fresh["scored"] == summary["scored"] == 200
  np.testing.assert_allclose(got["s_tc"], want["s_tc"], rtol=1e-6, atol=1e-6)


def test_a_second_scorer_on_one_out_is_refused(run, tmp_path):
  workdir, data, _, _ = run
  out = str(tmp_path / "scores")
  with lease_lib.Lease(out, "score"):
    with pytest.raises(lease_lib.LeaseHeld, match=f"{out} is in use by another writer: score"):
      score.score_split(alip_jax.load(workdir), records.split_files(data, "test").files, out,
                        batch_size=48, progress=False)
    assert os.listdir(out) == [lease_lib.LEASE_NAME]
