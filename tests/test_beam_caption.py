"""The captioner stage on Beam with RunInference (tools/beam_caption.py),
run in the torch Python: the same captions as the single-process captioner,
caption for caption, in key-sorted shards the builder joins by key."""

import glob
import json
import os
import subprocess

import pytest

from alip_jax.tools import build, caption
from test_build import inputs, read_back  # noqa: F401  (inputs: a fixture)

TORCH_PYTHON = os.environ.get("ALIP_TORCH_PYTHON")


def has_beam(python):
  return python and subprocess.run([python, "-c", "import apache_beam"],
                                   capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not has_beam(TORCH_PYTHON),
                    reason="needs ALIP_TORCH_PYTHON with apache-beam (tests/run.sh makes it)")
def test_beam_captions_equal_the_single_process_captioners(inputs, tmp_path):
  from alip_jax.tools.beam_caption import shard_of
  model = str(tmp_path / "tiny_blip")
  here = os.path.dirname(os.path.abspath(__file__))
  subprocess.run([TORCH_PYTHON, os.path.join(here, "tiny_captioner.py"), model], check=True,
                 capture_output=True, timeout=300)
  tar = [str(inputs / "00000.tar")]
  flags = ["--batch_size", "3", "--max_new_tokens", "6"]
  single = caption.run_in_python(TORCH_PYTHON, model, tar, str(tmp_path / "single.jsonl"),
                                 [*flags, "--no_progress"])
  prefix = str(tmp_path / "beam" / "captions")
  caption.run_in_python(TORCH_PYTHON, model, tar, prefix, [*flags, "--num_shards", "2"],
                        module="alip_jax.tools.beam_caption")
  with open(single) as f:
    want = {r["key"]: r["caption"] for r in map(json.loads, f)}
  got = {}
  for shard in range(2):
    with open(f"{prefix}-{shard:05d}-of-00002.jsonl") as f:
      rows = [json.loads(line) for line in f]
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)
    assert all(shard_of(r["key"], 2) == shard for r in rows)
    got.update((r["key"], r["caption"]) for r in rows)
  assert got == want and len(got) == 13  # every decodable image (test_build's captioner test)
  with open(f"{prefix}-counts.json") as f:
    assert json.load(f) == {"captioned": 13, "missing_image": 1, "undecodable_image": 1}
  out = str(tmp_path / "built")
  stats = build.build(tar, build.BuildOptions(out=out), glob.glob(f"{prefix}-*-of-*.jsonl"),
                      vocab_size=40)
  assert stats["written"] == 10
  assert all(rec["caption"] == want[key] for key, rec in read_back(out).items())
