"""The Beam builder on damaged and hostile inputs: every case a named error or
an exactly counted skip, nothing readable lost; manifests that refuse mixed
builds; shards that do not depend on the runner, the worker count, the input
order or the number of input files; the Dataflow graph builds."""

import collections
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alip_jax.data import records
from alip_jax.tools import beam_build, build, tar_reader
from alip_jax.tools.inputs import BadInputError, Columns, Limits, read_table
from test_build import add, image_bytes, read_back
from test_data import spell


def sample_tar(path, keys, order="grouped"):
  """KEY.jpg + KEY.txt per key; order 'grouped', 'split' (all images, then
  all texts) or 'reversed'."""
  number = lambda k: int("".join(filter(str.isdigit, k)) or 0)
  members = [(f"{k}.jpg", image_bytes(number(k))) for k in keys]
  texts = [(f"{k}.txt", f"raw {spell(number(k))}".encode()) for k in keys]
  if order == "split":
    ordered = members + texts
  else:
    ordered = [m for pair in zip(members, texts) for m in pair]
    ordered = ordered[::-1] if order == "reversed" else ordered
  with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
    for name, data in ordered:
      add(archive, name, data)
  return path


def header_offsets(path):
  with tarfile.open(path) as archive:
    return [m.offset for m in archive]


def samples_of(path, skip_bad=False, max_member_bytes=1 << 20):
  counts = collections.Counter()
  with open(path, "rb") as f:
    got = dict(tar_reader.read_samples(f, str(path), max_member_bytes, skip_bad, counts))
  return got, counts


def test_bad_header_mid_archive_is_named_or_counted_and_resynced(tmp_path):
  path = sample_tar(tmp_path / "a.tar", [f"k{i:02d}" for i in range(20)])
  bad = header_offsets(path)[10]  # k05.jpg's header
  data = bytearray(path.read_bytes())
  data[bad + 3] ^= 0xFF
  path.write_bytes(bytes(data))
  # Python's tarfile takes the bad header for the end: 5 of 20 samples.
  with tarfile.open(path) as archive:
    assert len(archive.getnames()) == 10
  with pytest.raises(tar_reader.TarError, match=f"a.tar: bad tar header at byte offset {bad}"):
    samples_of(path)
  got, counts = samples_of(path, skip_bad=True)
  assert counts == {"bad_tar_header": 1}
  assert len(got) == 20 and set(got["k05"]) == {"txt"}  # only the damaged member is lost
  assert all(set(got[k]) == {"jpg", "txt"} for k in got if k != "k05")
  # Through the whole build: the error names the file and offset; with
  # --skip_bad_members the build counts it and keeps every other sample.
  with pytest.raises(tar_reader.TarError, match=f"a.tar: bad tar header at byte offset {bad}"):
    build.build([str(path)], build.BuildOptions(out=str(tmp_path / "o1")))
  stats = build.build([str(path)], build.BuildOptions(
      out=str(tmp_path / "o2"), skip_bad_members=True, missing_caption="raw"), vocab_size=40)
  assert stats["written"] == 19 and stats["skipped"] == {"bad_tar_header": 1, "missing_image": 1}


def test_truncated_archives_are_named_or_counted(tmp_path):
  path = sample_tar(tmp_path / "a.tar", [f"k{i}" for i in range(6)])
  offsets = header_offsets(path)
  data = path.read_bytes()
  (tmp_path / "mid.tar").write_bytes(data[:offsets[4] + 700])   # inside k2.jpg's data
  (tmp_path / "edge.tar").write_bytes(data[:offsets[6]])         # at a member boundary
  for name in ("mid.tar", "edge.tar"):
    with pytest.raises(tar_reader.TarError, match=f"{name}: truncated tar archive"):
      samples_of(tmp_path / name)
    got, counts = samples_of(tmp_path / name, skip_bad=True)
    assert counts == {"truncated_tar": 1}
    assert sorted(k for k, parts in got.items() if set(parts) == {"jpg", "txt"}) == [
        "k0", "k1"] + (["k2"] if name == "edge.tar" else [])


def test_members_of_a_key_need_not_be_adjacent_and_links_resolve(tmp_path):
  keys = [f"k{i}" for i in range(5)]
  got, counts = samples_of(sample_tar(tmp_path / "split.tar", keys, "split"))
  assert not counts and all(set(got[k]) == {"jpg", "txt"} for k in keys)
  with tarfile.open(tmp_path / "links.tar", "w") as archive:
    add(archive, "a.jpg", image_bytes(0))
    add(archive, "a.txt", b"raw a")
    for name, kind, target in (("b.jpg", tarfile.LNKTYPE, "a.jpg"),
                               ("c.jpg", tarfile.SYMTYPE, "./a.jpg"),
                               ("d.jpg", tarfile.LNKTYPE, "nowhere.jpg")):
      info = tarfile.TarInfo(name)
      info.type, info.linkname = kind, target
      archive.addfile(info)
    add(archive, "a.txt", b"raw a again")                    # same key and extension
    fifo = tarfile.TarInfo("e.fifo")
    fifo.type = tarfile.FIFOTYPE
    archive.addfile(fifo)
  got, counts = samples_of(tmp_path / "links.tar")
  assert got["b"]["jpg"] == got["c"]["jpg"] == got["a"]["jpg"] == image_bytes(0)
  assert got["a"]["txt"] == b"raw a" and "d" not in got and "e" not in got
  assert counts == {"unresolved_tar_link": 1, "duplicate_tar_member": 1,
                    "unsupported_tar_member": 1}


def sparse_bomb_tar(path):
  """A 10 KB tar whose GNU sparse member claims 6 GiB."""
  with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as archive:
    add(archive, "bomb.txt", b"raw bomb")
    add(archive, "bomb.jpg", b"")
  data = bytearray(path.read_bytes())
  header = header_offsets(path)[1]
  block = bytearray(data[header:header + 512])
  block[156:157] = b"S"
  block[483:495] = b"%011o\0" % (6 << 30)
  block[148:156] = b" " * 8
  block[148:156] = b"%06o\0 " % sum(block)
  data[header:header + 512] = block
  path.write_bytes(bytes(data))
  return path


def test_member_sizes_are_checked_against_the_header_before_reading(tmp_path):
  got, counts = samples_of(sparse_bomb_tar(tmp_path / "bomb.tar"))
  assert got["bomb"] == {"txt": b"raw bomb", "jpg": None} and not counts
  got, _ = samples_of(sample_tar(tmp_path / "a.tar", ["k"]), max_member_bytes=100)
  assert got["k"]["jpg"] is None and got["k"]["txt"] == b"raw zero"


def png_header_only(width, height):
  """A PNG that claims width × height pixels (a decompression bomb's header)."""
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_table_keys_types_and_paths(tmp_path):
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "ok.png").write_bytes(image_bytes(1, "PNG"))
  (tmp_path / "outside.png").write_bytes(image_bytes(2, "PNG"))
  with open(tmp_path / "in" / "t.csv", "w") as f:
    f.write(f"key,image,text\na,ok.png,x\nb,../outside.png,x\nc,{tmp_path}/outside.png,x\n")
  rows = list(read_table(str(tmp_path / "in" / "t.csv"), Columns()))
  assert [(k, m.get("__skip__")) for k, _, _, m in rows] == [
      ("a", None), ("b", "image_path_outside_table"), ("c", "image_path_outside_table")]
  rows = list(read_table(str(tmp_path / "in" / "t.csv"), Columns(),
                         Limits(allow_outside_paths=True)))
  assert all(image for _, image, _, _ in rows)
  pq.write_table(pa.table({"key": [5, 0], "image": [1, 2], "text": ["x", "y"]}),
                 tmp_path / "in" / "ints.parquet")
  with pytest.raises(BadInputError, match="column 'image' .* has type int64"):
    build.build([str(tmp_path / "in" / "ints.parquet")], build.BuildOptions(out=str(tmp_path / "o")))
  assert not os.path.exists(tmp_path / "o" / "manifest.json")  # refused at start-up


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
  """One input of every kind of trouble, with the exact count each must give."""
  d = tmp_path_factory.mktemp("hostile")
  with tarfile.open(d / "a.tar", "w") as archive:
    for i in range(4):                                # k0..k3: fine, members not adjacent
      add(archive, f"k{i}.jpg", image_bytes(i))
    for i in range(4):
      add(archive, f"k{i}.txt", f"raw {spell(i)}".encode())
    info = tarfile.TarInfo("k4.jpg")                  # k4: a hard link to k0's image
    info.type, info.linkname = tarfile.LNKTYPE, "k0.jpg"
    archive.addfile(info)
    add(archive, "k4.txt", b"raw four")
    add(archive, "big.jpg", os.urandom(30000))        # over --max_member_bytes 20000
    add(archive, "big.txt", b"raw big")
    add(archive, "bomb1.png", png_header_only(9000, 9000))    # over max_pixels
    add(archive, "bomb1.txt", b"raw bomb")
    add(archive, "bomb2.png", png_header_only(20000, 20000))  # over PIL's own limit
    add(archive, "bomb2.txt", b"raw bomb")
    add(archive, "long.jpg", image_bytes(7))
    add(archive, "long.txt", ("word " * 1000).encode())        # 4999 chars > 4096
    for key in ("longcap", "emptycap", "badcap"):             # their captions are bad
      add(archive, f"{key}.jpg", image_bytes(8))
      add(archive, f"{key}.txt", b"raw fine")
  pq.write_table(pa.table({"key": [0, 1], "image": [image_bytes(10), image_bytes(11)],
                           "text": ["raw ten", "raw eleven"]}), d / "ints.parquet")
  with open(d / "wrong.jsonl", "w") as f:
    f.write(json.dumps({"key": "w", "image": None, "text": 5}) + "\n")
  with open(d / "caps.jsonl", "w") as f:
    for key in ["k0", "k1", "k2", "k3", "k4", "big", "bomb1", "bomb2", "long", "0", "1",
                "nobody", "nobody", "nobody2"]:
      f.write(json.dumps({"key": key, "caption": f"caption {key}"}) + "\n")
  with open(d / "caps.jsonl", "ab") as f:
    f.write(json.dumps({"key": "longcap", "caption": "word " * 1000}).encode() + b"\n")
    f.write(json.dumps({"key": "emptycap", "caption": " &nbsp; "}).encode() + b"\n")
    f.write(b'{"key": "badcap", "caption": "caption \xff"}\n')  # not UTF-8
    f.write(b'{"key": "bad\xfekey", "caption": "caption"}\n')
  return d


def test_every_counter_is_exact(hostile, tmp_path):
  out = str(tmp_path / "o")
  stats = build.build([str(hostile / "a.tar"), str(hostile / "ints.parquet"),
                       str(hostile / "wrong.jsonl")],
                      build.BuildOptions(out=out, num_shards=2, max_member_bytes=20000),
                      [str(hostile / "caps.jsonl")], vocab_size=40)
  assert stats["skipped"] == {"member_too_large": 1, "image_too_large": 2, "too_long_raw_text": 1,
                              "orphan_caption_key": 2, "bad_column_type": 1,
                              "too_long_caption": 1, "empty_caption": 1, "non_utf8_caption": 1,
                              "non_utf8_key": 1}
  samples = read_back(out)
  assert sorted(samples) == ["0", "1", "k0", "k1", "k2", "k3", "k4"] and stats["written"] == 7
  assert samples["0"]["caption"] == "caption 0" and samples["0"]["raw_text"] == "raw ten"
  assert samples["k4"]["image"] == samples["k0"]["image"]
  manifest = json.load(open(os.path.join(out, "manifest.json")))["train"]
  assert manifest["complete"] and sum(manifest["shards"].values()) == 7
  assert [f["path"] for f in manifest["build"]["inputs"]] == sorted(
      str(hostile / n) for n in ("a.tar", "ints.parquet", "wrong.jsonl"))
  assert manifest["build"]["options"]["max_member_bytes"] == 20000
  assert len(manifest["tokenizer"]["sha256"]) == 64


def test_options_are_validated(tmp_path, capsys):
  for flags, message in ((["--resize", "-5"], "--resize -5: must be >= 0"),
                         (["--num_shards", "0"], "--num_shards 0: must be >= 1"),
                         (["--jpeg_quality", "101"], "--jpeg_quality 101"),
                         (["--max_text_chars", "0"], "--max_text_chars 0"),
                         (["--split", "a-b"], "--split 'a-b'"),
                         (["--direct_num_workers", "0"], "--direct_num_workers 0: must be >= 1"),
                         (["--workers", "2"], r"unknown flags \['--workers'\]")):
    with pytest.raises(SystemExit, match=message):
      build.main(["--input", "x.tar", "--out", str(tmp_path), *flags])


def test_tiny_builds_get_a_tokenizer_or_a_clear_message(tmp_path):
  tar = sample_tar(tmp_path / "two.tar", ["a", "b"])
  stats = build.build([str(tar)], build.BuildOptions(out=str(tmp_path / "two"),
                                                     missing_caption="raw"))
  assert stats["written"] == 2 and os.path.getsize(tmp_path / "two" / "tokenizer.model") > 0
  with pytest.raises(ValueError, match="no record was written to split 'train'"):
    build.build([str(tar)], build.BuildOptions(out=str(tmp_path / "none")))


def test_other_inputs_or_shard_counts_never_mix_into_an_out(tmp_path):
  a = sample_tar(tmp_path / "a.tar", ["a0", "a1", "a2"])
  b = sample_tar(tmp_path / "b.tar", ["b0", "b1"])
  out = str(tmp_path / "o")
  build.build([str(a)], build.BuildOptions(out=out, num_shards=3, missing_caption="raw"),
              vocab_size=40)
  with pytest.raises(FileExistsError, match=r"a different build \(inputs differ\).*--overwrite"):
    build.build([str(b)], build.BuildOptions(out=out, num_shards=3, missing_caption="raw"),
                vocab_size=40)
  with pytest.raises(FileExistsError, match=r"\(options differ\)"):
    build.build([str(a)], build.BuildOptions(out=out, num_shards=2, missing_caption="raw"),
                vocab_size=40)
  stats = build.build([str(b)], build.BuildOptions(out=out, num_shards=2, missing_caption="raw"),
                      vocab_size=40, overwrite=True)
  assert stats["written"] == 2 and sorted(read_back(out)) == ["b0", "b1"]
  assert sorted(os.listdir(out)) == sorted(
      [".build", "counts.json", "manifest.json", "stats.json", "tokenizer.model",
       "train-00000-of-00002.array_record", "train-00001-of-00002.array_record"])
  # The trainer reads only the shards counts.json lists.
  stray = os.path.join(out, "train-00002-of-00003.array_record")
  shutil.copy(os.path.join(out, "train-00000-of-00002.array_record"), stray)
  with pytest.raises(records.ShardMismatchError, match="not from this build: "
                     r"\['train-00002-of-00003.array_record'\]"):
    records.split_files(out, "train")


def test_a_failed_build_does_not_block_its_own_advice(tmp_path):
  """--vocab_size is checked before any work; a build that failed before any
  complete shard (a truncated tar) is replaced by the re-run its error
  advises; one that failed at the tokenizer keeps its shards for a re-run
  with a larger vocabulary."""
  tar = str(sample_tar(tmp_path / "a.tar", [f"k{i}" for i in range(6)]))
  out = str(tmp_path / "o")
  for size in ("0", "-3", "4"):
    with pytest.raises(SystemExit, match=f"--vocab_size {size}: must exceed the special tokens"):
      build.main(["--input", tar, "--out", out, "--missing_caption", "raw", "--vocab_size", size])
  assert not os.path.exists(out)
  with pytest.raises(ValueError, match=r"--vocab_size 5 is too small .* \d+ in all; use at least"):
    build.build([tar], build.BuildOptions(out=out, missing_caption="raw"), vocab_size=5)
  stats = build.build([tar], build.BuildOptions(out=out, missing_caption="raw"), vocab_size=40)
  assert stats["written"] == 6 and stats["reused_shards"] == 1
  assert json.load(open(os.path.join(out, "manifest.json")))["train"]["complete"]

  truncated = tmp_path / "cut.tar"
  truncated.write_bytes(open(tar, "rb").read()[:header_offsets(tar)[4] + 700])
  cut = str(tmp_path / "cut")
  with pytest.raises(tar_reader.TarError, match="truncated tar archive"):
    build.build([str(truncated)], build.BuildOptions(out=cut, missing_caption="raw"),
                vocab_size=40)
  assert not json.load(open(os.path.join(cut, "manifest.json")))["train"]["complete"]
  advised = build.build([str(truncated)], build.BuildOptions(
      out=cut, missing_caption="raw", skip_bad_members=True), vocab_size=40)
  assert advised["skipped"] == {"truncated_tar": 1} and advised["written"] == 2


@pytest.mark.slow
def test_shards_do_not_depend_on_runner_workers_input_order_or_file_count(tmp_path):
  keys = [f"s{i:02d}" for i in range(12)]
  one = [str(sample_tar(tmp_path / "one.tar", keys))]
  parts = [str(sample_tar(tmp_path / f"p{j}-{order}.tar", keys[j::3], order))
           for j, order in enumerate(("reversed", "split", "grouped"))]
  builds = {"in_memory": (one, ["--direct_running_mode=in_memory"]),
            "2 processes": (one, ["--direct_running_mode=multi_processing",
                                  "--direct_num_workers=2"]),
            "3 files, shuffled members": (parts, ["--direct_num_workers=1"])}
  shards = {}
  for name, (files, beam_args) in builds.items():
    out = str(tmp_path / name.replace(" ", "_"))
    build.build(files, build.BuildOptions(out=out, num_shards=4, missing_caption="raw"),
                beam_args=beam_args, vocab_size=40)
    shards[name] = {os.path.basename(f): open(f, "rb").read()
                    for f in records.split_files(out, "train").files}
  assert len(shards["in_memory"]) == 4
  assert shards["in_memory"] == shards["2 processes"] == shards["3 files, shuffled members"]


def test_the_dataflow_graph_builds_with_cluster_options():
  import apache_beam as beam
  options = build.pipeline_options([
      "--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
      "--temp_location=gs://my-bucket/tmp", "--num_workers=100",
      "--requirements_file=requirements-dataflow.txt"])
  pipeline = beam.Pipeline(options=options)
  assert type(pipeline.runner).__name__ == "DataflowRunner"
  opts = build.BuildOptions(out="gs://my-bucket/yfcc15m", num_shards=4096, resize=256)
  beam_build.build_graph(pipeline, [f"gs://my-bucket/yfcc15m/{i:05d}.tar" for i in range(3)],
                         ["gs://my-bucket/captions.parquet"], opts, opts.columns(), opts.limits())
  proto = pipeline.to_runner_api()  # every DoFn pickles; the graph is complete
  names = {t.unique_name for t in proto.components.transforms.values()}
  assert {"ReadKeys", "JoinCaptions", "Select", "MakeRecords", "GroupShards", "WriteShard"} <= names


@pytest.mark.slow
def test_build_benchmark_prints_rate_and_memory():
  from alip_jax.benchmarks import build as benchmark
  rows = benchmark.main(["--records", "24", "--per_tar", "10", "--source_size", "48",
                         "--resize", "32", "--workers", "1", "--extra_captions", "0,2",
                         "--old_ref", "none"])
  assert [(r[0], r[1], r[2]) for r in rows] == [("beam", 24, 24), ("beam", 24, 72)]
  assert all(r[4] > 0 and r[5] > 0 for r in rows)  # records/s, peak RSS (next test: its meaning)


def test_build_benchmark_peak_rss_sums_the_process_tree():
  """The builder's Beam workers are child processes: the peak counts them.
  A parent holding 100 MiB starts a child that holds 200 MiB while both
  sleep; the peak must see both (a Python adds ~10-40 MiB of its own)."""
  from alip_jax.benchmarks import build as benchmark
  hold = "x = bytearray({mib} * 2**20); x[::4096] = b'1' * len(x[::4096]); "
  child = hold.format(mib=200) + "import time; time.sleep(1.5)"
  parent = (hold.format(mib=100) +
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])")
  seconds, peak, _, _ = benchmark.measure([sys.executable, "-c", parent], None, dict(os.environ))
  assert 300 * 2**20 < peak < 400 * 2**20, peak / 2**20
  assert seconds >= 1.5
