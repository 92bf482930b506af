"""The filter on Beam (curation/beam_filter.py): the same bytes as the
in-memory filter for every kind of rule, an exact top-fraction threshold on
small data and a bounded one on large, a clean re-run after an interruption,
and bad scores named."""

import os

import numpy as np
import pytest

from alip_jax.curation import beam_filter, filtering as filter_lib, scoring as score
from test_filter import scored  # noqa: F401  (a fixture)

RULES = [("w_sample>=0.5, noise_kind!=partial", None, None),
         ("", 0.3, "w_sample"),
         ("noise_kind!=mismatched", 0.5, "clip_score"),
         ("clip_score>0.9", 0.8, "s_xc"),     # the top fraction is more than the rules keep
         ("clip_score>2", None, None)]          # nothing kept: one empty shard


def tree(out):
  """{relative path: bytes} of every file under `out` that the filter writes
  (made_by.json is what alip-filter's entry point records before either
  filter runs: the in-memory one writes it itself, the Beam one does not)."""
  files = {}
  for root, _, names in os.walk(out):
    for name in names:
      if name == "made_by.json":
        continue
      path = os.path.join(root, name)
      files[os.path.relpath(path, out)] = open(path, "rb").read()
  return files


@pytest.mark.parametrize("keep,top_fraction,by", RULES)
def test_beam_filter_writes_the_in_memory_filters_bytes(tiny_corpus, scored, tmp_path, keep,
                                                        top_fraction, by):
  scores_dir, _, _ = scored
  args = dict(keep=keep, top_fraction=top_fraction, by=by, shards=3)
  want = filter_lib.filter_split(scores_dir, tiny_corpus, "test", str(tmp_path / "memory"), **args)
  # Small batches and blocks: several of each, as at scale.
  got = beam_filter.filter_split(scores_dir, tiny_corpus, "test", str(tmp_path / "beam"), **args,
                                 batch_size=32, block_size=64)
  assert got == want
  assert tree(tmp_path / "beam") == tree(tmp_path / "memory")


def test_threshold_is_exact_on_small_data_and_within_its_bound_on_large():
  from alip_jax.curation.top_rank import QuantileAtRank
  rng = np.random.default_rng(0)
  values = rng.permutation(5000).tolist()

  def summary(fn, parts):
    accumulators = [fn._add_inputs(fn.create_accumulator(), part) for part in parts]
    return fn.merge_accumulators(accumulators)

  exact = QuantileAtRank.create(2, epsilon=1e-4, max_num_elements=10**9)
  state = summary(exact, np.array_split(values, 3))
  for rank in (0, 1, 2499, 4998, 4999):
    assert exact.element_at(state, rank) == (rank, True)
  # A summary too small to hold them: collapsed, the rank within epsilon × N.
  small = QuantileAtRank.create(2, epsilon=0.01, max_num_elements=5000)
  state = summary(small, np.array_split(values, 7))
  for rank in (100, 2500, 4000):
    found, is_exact = small.element_at(state, rank)
    assert not is_exact and abs(found - rank) <= 0.01 * 5000


def test_an_interrupted_filter_reruns_into_the_same_bytes(tiny_corpus, scored, tmp_path,
                                                          monkeypatch):
  scores_dir, _, _ = scored
  args = dict(keep="noise_kind!=mismatched", top_fraction=0.5, by="clip_score", shards=3)
  clean = str(tmp_path / "clean")
  beam_filter.filter_split(scores_dir, tiny_corpus, "test", clean, **args)
  out = str(tmp_path / "interrupted")
  write_shard = beam_filter.records.write_shard

  def dies_on_the_second_shard(path, samples):
    if "00001-of" in path:
      next(iter(samples))
      raise OSError("power cut")
    return write_shard(path, samples)

  monkeypatch.setattr(beam_filter.records, "write_shard", dies_on_the_second_shard)
  with pytest.raises(Exception, match="power cut"):
    beam_filter.filter_split(scores_dir, tiny_corpus, "test", out, **args)
  assert os.path.exists(os.path.join(out, ".filter"))  # it did stop midway
  assert not os.path.exists(os.path.join(out, "filter.json"))
  monkeypatch.setattr(beam_filter.records, "write_shard", write_shard)
  beam_filter.filter_split(scores_dir, tiny_corpus, "test", out, **args)
  assert tree(out) == tree(clean)


def test_bad_scores_are_named(tiny_corpus, scored, tmp_path):
  scores_dir, table, _ = scored
  other = str(tmp_path / "other_split")
  os.makedirs(other)
  wrong = dict(table, index=table["index"] + 10)  # scores of a longer split
  score.write_parquet(wrong, os.path.join(other, "scores-00000-of-00001.parquet"))
  with pytest.raises(ValueError, match="scores record 209 but .* has 200: the scores belong"):
    beam_filter.filter_split(other, tiny_corpus, "test", str(tmp_path / "a"), keep="s_tc>0")
  twice = str(tmp_path / "twice")  # two scoring runs into one directory
  os.makedirs(twice)
  for p in range(2):
    score.write_parquet(table, os.path.join(twice, f"scores-{p:05d}-of-00002.parquet"))
  with pytest.raises(ValueError, match=r"record 0 is scored more than once \(in .*scores-00000"):
    beam_filter.filter_split(twice, tiny_corpus, "test", str(tmp_path / "b"), keep="s_tc>0")
  with pytest.raises(FileNotFoundError, match="run python -m alip_jax.score first"):
    beam_filter.filter_split(str(tmp_path), tiny_corpus, "test", str(tmp_path / "c"), keep="s_tc>0")


def test_nan_and_signed_zero_scores_rank_as_in_memory(tiny_corpus, scored, tmp_path):
  _, table, _ = scored
  odd = dict(table, clip_score=table["clip_score"].copy(), s_tc=table["s_tc"].copy())
  odd["clip_score"][::7] = np.nan     # 29 rows: the top 0.9 reaches into them…
  odd["s_tc"][::14] = np.nan          # …where S_tc (NaN last) breaks their ties
  odd["clip_score"][3::7] = -0.0      # 28 zeros, equal: the top 0.78 cuts
  odd["clip_score"][4::7] = 0.0       # through them by S_tc
  scores_dir = str(tmp_path / "odd_scores")
  os.makedirs(scores_dir)
  score.write_parquet(odd, os.path.join(scores_dir, "scores-00000-of-00001.parquet"))
  for fraction in (0.78, 0.9):
    args = dict(top_fraction=fraction, by="clip_score", shards=2)
    memory, beam = str(tmp_path / f"memory{fraction}"), str(tmp_path / f"beam{fraction}")
    filter_lib.filter_split(scores_dir, tiny_corpus, "test", memory, **args)
    beam_filter.filter_split(scores_dir, tiny_corpus, "test", beam, **args)
    assert tree(beam) == tree(memory)
