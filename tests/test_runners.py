"""A second Beam runner, for real: Beam's DaskRunner on a dask.distributed
cluster of two worker processes (started and stopped here), against the
in-process runner — the same bytes from the filter and from the builder."""

import pytest

from alip_jax.curation import beam_filter
from alip_jax.tools import build
from test_beam_filter import tree
from test_build import inputs  # noqa: F401  (a fixture)
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


@pytest.mark.slow  # ~8 s on a quiet machine (150 s at a load of 14 on 2 cores)
def test_builder_writes_the_same_bytes_on_dask(inputs, tmp_path, dask_args):
  files = [str(inputs / "00000.tar"), str(inputs / "table.csv"), str(inputs / "table.jsonl")]
  captions = [str(inputs / "captions.jsonl"), str(inputs / "captions.parquet")]
  built = {}
  for name, beam_args in (("local", ["--direct_running_mode=in_memory"]), ("dask", dask_args)):
    out = str(tmp_path / name)
    stats = build.build(files, build.BuildOptions(out=out, num_shards=3, resize=20), captions,
                        beam_args, vocab_size=60)
    built[name] = stats["skipped"], {n: b for n, b in tree(out).items()
                                     if n.endswith((".array_record", ".model", "counts.json"))}
  assert built["dask"] == built["local"]
  skipped, files = built["local"]
  assert len(files) == 5 and skipped == {  # 3 shards, tokenizer, counts
      "missing_caption": 2, "undecodable_image": 1, "non_utf8_raw_text": 1, "empty_raw_text": 2,
      "missing_image": 2, "unreadable_input_row": 1,
      "orphan_caption_key": 10}  # the captions of table.parquet's samples, left out here


@pytest.mark.slow
def test_benchmark_measures_the_builder_and_the_filter_per_worker():
  from alip_jax.benchmarks import build as benchmark
  rows = benchmark.main(["--records", "12", "--per_tar", "6", "--source_size", "40",
                         "--resize", "32", "--workers", "2", "--extra_captions", "0",
                         "--old_ref", "none", "--filter"])
  assert [r[0] for r in rows] == ["beam", "filter"]
  # records/s, and a peak RSS per worker process (a Python with Beam: > 50 MiB)
  assert all(r[4] > 0 and r[6] > 50 * 2**20 for r in rows)
