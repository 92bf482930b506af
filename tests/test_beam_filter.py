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
  """{relative path: bytes} of every file under `out`."""
  files = {}
  for root, _, names in os.walk(out):
    for name in names:
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
