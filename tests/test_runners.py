"""A second Beam runner, for real: Beam's DaskRunner on a dask.distributed
cluster of two worker processes (started and stopped here), against the
in-process runner — the same bytes from the filter and from the builder."""

import os

import pytest

from alip_jax.curation import beam_filter
from test_beam_filter import tree
from test_filter import scored  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def dask_args():
  """Beam options for a LocalCluster of 2 processes, 1 thread each."""
  distributed = pytest.importorskip("dask.distributed")
  with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                dashboard_address=None) as cluster:
    # Two partitions per Create: both workers get work (Reshuffle is a no-op on Dask).
    yield ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}",
           "--dask_npartitions=2"]


def test_filter_writes_the_same_bytes_on_dask(tiny_corpus, scored, tmp_path, dask_args):
  scores_dir, _, _ = scored
  args = dict(keep="noise_kind!=partial", top_fraction=0.4, by="clip_score", shards=3,
              batch_size=32, block_size=64)
  local = beam_filter.filter_split(scores_dir, tiny_corpus, "test", str(tmp_path / "local"),
                                   **args)
  dask = beam_filter.filter_split(scores_dir, tiny_corpus, "test", str(tmp_path / "dask"), **args,
                                  beam_args=dask_args)
  assert dask == local and local["kept"] > 0
  assert tree(tmp_path / "dask") == tree(tmp_path / "local")
