"""The data-regime knobs of the embedded corpus and the regimes report."""

import hashlib
import json
import os

import numpy as np
import pytest

from alip_jax.data import pipeline, records
from alip_jax.experiments import regimes_report
from alip_jax.tools import synthetic


def _digest(out_dir):
  h = hashlib.sha256()
  for name in sorted(os.listdir(out_dir)):
    if name.endswith(".array_record"):
      with open(os.path.join(out_dir, name), "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _split(cfg, split, n, seed=0):
  return synthetic.make_split(split, n, cfg, seed)


def test_default_corpus_is_unchanged_by_the_knobs(tmp_path):
  """The knobs' defaults draw nothing extra: the default corpus's shards are
  the bytes they were before the knobs existed (digest taken then), so the
  demo table stays the same to the digit."""
  cfg = synthetic.CorpusConfig(num_train=40, num_val=8, num_test=12, shards=2, vocab_size=96)
  synthetic.build(str(tmp_path), cfg)
  assert _digest(tmp_path) == "0f3208cee0fea52afecc93a31e13b3be05d76da95ae11d0b3513cdf14fa74c44"


def test_caption_specificity_and_hallucination():
  rich = _split(synthetic.CorpusConfig(caption_error_rate=0.0), "train", 200)
  generic = _split(synthetic.CorpusConfig(caption_error_rate=0.0, caption_specificity=0.0),
                   "train", 200)
  words = set(synthetic.COLOR_NAMES) | set(synthetic.SHAPES) | set(synthetic.SIZES) | {"top", "middle", "bottom"}
  assert all(set(s["caption"].split()) & words for s in rich)
  assert not any(set(s["caption"].split()) & words for s in generic)
  assert all(s["caption"].count("object") == s["meta"]["num_objects"] for s in generic)
  hallucinating = _split(synthetic.CorpusConfig(caption_error_rate=0.0, caption_hallucination_rate=1.0),
                         "train", 100)
  # one place phrase per object described: every caption describes one object too many
  places = lambda c: c.count("at the ") + c.count("in the middle")
  assert all(places(s["caption"]) == s["meta"]["num_objects"] + 1 for s in hallucinating)


def test_alt_text_detail_and_noise_mix():
  cfg = synthetic.CorpusConfig(alt_text_detail=1.0, noise_mix=(1.0, 0.0, 0.0))
  for s in _split(cfg, "train", 100):
    assert s["meta"]["noise_kind"] == "matched"
    # every object's place in web words, which the captioner never uses
    assert sum(s["raw_text"].lower().count(w) for w in ("upper", "center", "lower")) == s["meta"]["num_objects"]
  heavy = _split(synthetic.CorpusConfig(noise_mix=(0.2, 0.2, 0.6)), "train", 600)
  share = np.mean([s["meta"]["noise_kind"] == "mismatched" for s in heavy])
  assert 0.52 < share < 0.68  # Binomial(600, 0.6): ±4 sd


def test_query_styles_describe_the_scene_in_three_template_families():
  cfg = synthetic.CorpusConfig(query_styles=("caption", "alt", "human"))
  samples = _split(cfg, "test", 50)
  train_texts = _split(synthetic.CorpusConfig(alt_text_detail=1.0), "train", 120)
  train_words = {w for s in train_texts for t in (s["raw_text"], s["caption"]) for w in t.lower().split()}
  for s in samples:
    queries = s["meta"]["queries"]
    assert set(queries) == {"caption", "alt", "human"}
    assert queries["caption"].startswith("a ")
    # the human template family's own words appear in no training text
    assert {"sitting", "coloured", "picture:", "edge", "centre"} & set(queries["human"].split())
    assert not {"sitting", "coloured", "edge", "centre", "little"} & train_words
  # and the queries come from their own stream: the rest of the split is unchanged
  plain = _split(synthetic.CorpusConfig(), "test", 50)
  assert [p["caption"] for p in plain] == [s["caption"] for s in samples]
  with pytest.raises(ValueError, match="query_styles"):
    _split(synthetic.CorpusConfig(query_styles=("poetry",)), "test", 2)


def _fake_results(tmp_path, rank_fn):
  """Two regimes × rows × 3 seeds with ranks from rank_fn(regime, row, seed)."""
  cells, ranks = {}, {}
  for regime in ("rich/web", "generic/heavy"):
    for row in ("clip_caption", "bipath", "alip", "alip_raw"):
      for seed in range(3):
        key = f"{regime}|{row}|x1|{seed}"
        cells[key] = {"steps": 10, "seconds": 1.0, "val": {}}
        if row == "alip":
          cells[key]["gates"] = {"ws_mismatched": 0.9, "ws_partial": 0.8, "stc_mismatched": 0.95,
                                 "stc_partial": 0.85}
          cells[key]["means"] = {"h_tc": 0.5, "h_xt": 0.2, "h_xc": 0.2}
        for style in ("human", "caption", "alt"):
          for direction in ("i2t", "t2i"):
            ranks[f"{key}|{style}|{direction}"] = rank_fn(regime, row, seed).astype(np.uint16)
  meta = {"settings": {"x1": {"steps": 10, "batch": 8, "num_train": 100, "num_test": 400, "fold": 100}},
          "regimes": {"rich/web": {}, "generic/heavy": {}}, "cells": cells}
  with open(tmp_path / "regimes.json", "w") as f:
    json.dump(meta, f)
  np.savez_compressed(tmp_path / "regimes_ranks.npz", **ranks)


def test_report_resolves_a_known_difference_and_not_a_null_one(tmp_path):
  rng = np.random.default_rng(0)
  base = {seed: rng.integers(0, 3, size=400) for seed in range(3)}

  def ranks(regime, row, seed):
    r = base[seed].copy()
    if regime == "generic/heavy" and row == "alip":
      r[: 200] = 0  # ALIP gets half the queries to rank 0: a large, certain gain
    return r

  _fake_results(tmp_path, ranks)
  grid = regimes_report.Grid(str(tmp_path))
  _, gain, seeds = grid.contrast("generic/heavy", "alip", "bipath", "x1", "human")
  assert seeds == [0, 1, 2] and gain.resolved and gain.mean > 0.1
  _, null, _ = grid.contrast("rich/web", "alip", "bipath", "x1", "human")
  assert null.mean == 0 and not null.resolved
  # R@1 of a row is the share of rank-0 queries, pooled over directions and seeds
  want = np.mean([np.mean(base[s] == 0) for s in range(3)])
  assert grid.row_interval("rich/web", "bipath", "x1", "human", "R@1").mean == pytest.approx(want)
  text = regimes_report.report(str(tmp_path))
  assert "| ALIP − bi-path | bipath | **+" in text  # resolved gains are marked
  assert os.path.exists(tmp_path / "regimes_heatmap_x1.png")
