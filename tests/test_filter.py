"""alip_jax.filter: each rule keeps exactly what it should, and the output is
an ordinary data directory (shards, counts.json, tokenizer, other splits)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alip_jax.checkpointing import lease as lease_lib
from alip_jax.curation import filtering as filter_lib, provenance, scoring as score
from alip_jax.data import pipeline, records
from test_end_to_end import ROOT


@pytest.fixture()
def scored(tiny_corpus, tmp_path):
  """Made-up scores for the tiny corpus's test split (200 records); records
  3 and 7 unscored (as bad records are)."""
  source = records.ShardedSource(records.split_files(tiny_corpus, "test").files)
  recs = [pipeline.decode_record(source[i]) for i in range(len(source))]
  rng = np.random.default_rng(0)
  index = np.array([i for i in range(len(recs)) if i not in (3, 7)])
  n = len(index)
  s_tc = rng.uniform(0, 1, n).astype(np.float32)
  table = {"index": index, "key": np.array([recs[i]["key"] for i in index]),
           "noise_kind": np.array([recs[i]["meta"]["noise_kind"] for i in index]),
           "s_tc": s_tc, "s_xt": rng.uniform(0, 1, n).astype(np.float32),
           "s_xc": rng.uniform(0, 1, n).astype(np.float32),
           "w_sample": np.minimum(1, np.exp(2 * (s_tc - 0.5))).astype(np.float32),
           "w_raw_pair": np.ones(n, np.float32), "w_caption_pair": np.ones(n, np.float32)}
  table["clip_score"] = table["s_xt"]
  out = str(tmp_path / "scores")
  os.makedirs(out)
  # Two parts, as two processes write them.
  half = {k: v[:100] for k, v in table.items()}, {k: v[100:] for k, v in table.items()}
  for p, part in enumerate(half):
    score.write_parquet(part, os.path.join(out, f"scores-{p:05d}-of-00002.parquet"))
  return out, table, recs


def kept_keys(out, split="test"):
  source = records.ShardedSource(records.split_files(out, split).files)
  return [records.decode(source[i])["key"] for i in range(len(source))]


def test_threshold_rule_keeps_exactly_what_passes(tiny_corpus, scored, tmp_path):
  scores_dir, table, recs = scored
  out = str(tmp_path / "filtered")
  stats = filter_lib.filter_split(scores_dir, tiny_corpus, "test", out,
                                  keep="w_sample>=0.5, noise_kind!=partial", shards=3)
  want = table["key"][(table["w_sample"] >= 0.5) & (table["noise_kind"] != "partial")]
  assert kept_keys(out) == list(want)  # in the original order
  assert stats["kept"] == len(want) and stats["records"] == 200 and stats["not_scored"] == 2
  assert stats["dropped"] == 200 - len(want)
  assert stats["rules"]["w_sample>=0.5"]["pass"] == int((table["w_sample"] >= 0.5).sum())
  assert stats["rules"]["noise_kind!=partial"]["fail"] == int((table["noise_kind"] == "partial").sum())
  for kind in ("matched", "partial", "mismatched"):
    mask = table["noise_kind"] == kind
    assert stats["noise_kind"][kind] == {
        "kept": int(np.isin(table["key"][mask], want).sum()),
        "dropped": int((~np.isin(table["key"][mask], want)).sum())}
  assert stats["noise_kind"]["partial"]["kept"] == 0
  # An ordinary data directory: shards by the naming rule, counts, tokenizer, other splits.
  assert sorted(f for f in os.listdir(out) if f.startswith("test-")) == [
      records.shard_name("test", s, 3) for s in range(3)]
  counts = json.load(open(os.path.join(out, "counts.json")))
  assert counts["splits"] == {"test": len(want), "train": 1500, "val": 50}
  assert records.split_files(out, "test").num_records == len(want)
  assert os.path.exists(os.path.join(out, "tokenizer.model"))
  assert len(kept_keys(out, "train")) == 1500
  # Kept records are unchanged, byte for byte once decoded.
  source = records.ShardedSource(records.split_files(out, "test").files)
  first = records.decode(source[0])
  original = records.ShardedSource(records.split_files(tiny_corpus, "test").files)
  position = int(table["index"][list(table["key"]).index(first["key"])])
  assert first == records.decode(original[position])


def test_top_fraction_keeps_the_largest_with_ties_by_s_tc(tiny_corpus, scored, tmp_path):
  scores_dir, table, _ = scored
  out = str(tmp_path / "top")
  stats = filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, top_fraction=0.3,
                                  by="w_sample")
  count = round(0.3 * 198)
  # w_sample ties at 1 for every s_tc ≥ 0.5: the order is then S_tc's.
  want = set(table["key"][np.argsort(-table["s_tc"])[:count]])
  assert set(kept_keys(out)) == want and stats["kept"] == count == 59
  by_clip = filter_lib.filter_split(scores_dir, tiny_corpus, "test", str(tmp_path / "clip"),
                                    top_fraction=0.3, by="clip_score")
  assert set(kept_keys(str(tmp_path / "clip"))) == set(
      table["key"][np.argsort(-table["clip_score"])[:count]])
  assert by_clip["rules"] == {"top 0.3 by clip_score": {"pass": 59, "fail": 139}}


def test_bad_rules_are_clear_errors():
  with pytest.raises(ValueError, match="COLUMN OP VALUE"):
    filter_lib.parse_rules("weight>=0.5")
  with pytest.raises(ValueError, match="is a number"):
    filter_lib.parse_rules("w_sample>=high")
  with pytest.raises(ValueError, match="is text"):
    filter_lib.parse_rules("noise_kind>matched")
  assert filter_lib.parse_rules("clip_score < 0.25,noise_kind==matched") == [
      ("clip_score", "<", 0.25), ("noise_kind", "==", "matched")]


def test_command_line(tiny_corpus, scored, tmp_path):
  scores_dir, table, _ = scored
  out = str(tmp_path / "cli")
  result = subprocess.run(
      [sys.executable, "-m", "alip_jax.filter", f"--scores={scores_dir}",
       f"--data={tiny_corpus}", "--split=test", f"--out={out}", "--keep=noise_kind==matched"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  stats = json.loads(result.stdout)
  assert stats["kept"] == int((table["noise_kind"] == "matched").sum())
  assert json.load(open(os.path.join(out, "filter.json"))) == stats


def test_a_rerun_with_other_scores_or_rules_is_refused_unless_overwrite(tiny_corpus, scored,
                                                                        tmp_path):
  scores_dir, table, _ = scored
  out = str(tmp_path / "out")
  first = filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.5")
  again = filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.5")
  assert again == first  # the same run repeated: allowed
  # Scores of another model (its summary names other weights), or other rules.
  with open(os.path.join(scores_dir, "summary.json"), "w") as f:
    json.dump({"model": {"source": "/runs/other", "step": 9, "weights_sha256": "ab"}}, f)
  before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}
  with pytest.raises(provenance.OutputMismatch, match=r"scored_by.model: None → .*--overwrite"):
    filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.5")
  with pytest.raises(provenance.OutputMismatch, match="keep: 'w_sample>=0.5' → 'w_sample>=0.9'"):
    filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.9", shards=2)
  assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before
  replaced = filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.9",
                                     shards=2, overwrite=True)
  assert replaced["kept"] == int((table["w_sample"] >= 0.9).sum()) == len(kept_keys(out))
  assert len(records.split_files(out, "test").files) == 2  # no stray shard of the first run


def test_a_second_filter_on_one_out_is_refused(tiny_corpus, scored, tmp_path):
  scores_dir, _, _ = scored
  out = str(tmp_path / "out")
  with lease_lib.Lease(out, "filter"):
    with pytest.raises(lease_lib.LeaseHeld, match=f"{out} is in use by another writer: filter"):
      filter_lib.filter_split(scores_dir, tiny_corpus, "test", out, keep="w_sample>=0.5")
    assert os.listdir(out) == [lease_lib.LEASE_NAME]


def test_a_bad_rule_on_the_command_line_is_one_error_line(tiny_corpus, scored, tmp_path):
  scores_dir, _, _ = scored
  out = str(tmp_path / "cli")
  result = subprocess.run(
      [sys.executable, "-m", "alip_jax.filter", f"--scores={scores_dir}",
       f"--data={tiny_corpus}", "--split=test", f"--out={out}", "--keep=weight>=0.5"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      "error: --keep 'weight>=0.5': write COLUMN OP VALUE with OP one of >= <= == != > < and "
      "COLUMN one of " + ", ".join(score.COLUMNS)], result.stderr[-3000:]
  assert not os.path.exists(out)  # nothing written
