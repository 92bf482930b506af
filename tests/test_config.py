"""Configs: defaults live in configs/base.py; the shipped configs are what
they were before (frozen_configs.json); config_check names unknown and
mistyped fields and fills missing ones, also for command-line overrides."""

import json
import logging
import os
import subprocess
import sys

import ml_collections
import pytest

from alip_jax import config_check
from alip_jax.configs import alip_yfcc15m, base, demo
from conftest import ROOT

CONFIGS = {"demo.py": demo, "alip_yfcc15m.py": alip_yfcc15m}


def sections(config) -> dict:
  """{'train.steps': 300, 'seed': 0, 'model.image': {...}, …} as config.json has them."""
  out = {}
  for key, value in json.loads(config.to_json_best_effort()).items():
    if isinstance(value, dict):
      out.update({f"{key}.{k}": v for k, v in value.items()})
    else:
      out[key] = value
  return out


def frozen_configs() -> dict:
  """The shipped configs as they were before base.py: demo.py:alip whole,
  the others as their differences from it."""
  with open(os.path.join(os.path.dirname(__file__), "frozen_configs.json")) as f:
    frozen = json.load(f)
  reference = frozen["demo.py:alip"]
  return {name: {**reference, **diff} for name, diff in frozen.items()}


@pytest.mark.parametrize("name", list(frozen_configs()))
def test_shipped_configs_are_unchanged_field_for_field(name):
  file, arg = name.split(":")
  got, want = sections(CONFIGS[file].get_config(arg)), frozen_configs()[name]
  assert list(got) == list(want)  # also in the same order (config.json)
  changed = {k: (want[k], got[k]) for k in want
             if json.dumps(got[k], sort_keys=True) != json.dumps(want[k], sort_keys=True)}
  assert not changed, changed
  assert config_check.validate(CONFIGS[file].get_config(arg)).to_dict() == (
      CONFIGS[file].get_config(arg).to_dict())


def test_every_default_is_in_base_and_validates():
  config = base.get_config()
  assert config_check.validate(config).to_dict() == config.to_dict()
  assert set(sections(config)) == set(frozen_configs()["demo.py:alip"])


def loaded(**changes) -> ml_collections.ConfigDict:
  """demo.py's config as read back from a run's config.json, with `changes`
  ({'train.steps': 3}) made to that json."""
  fields = json.loads(demo.get_config().to_json_best_effort())
  for path, value in changes.items():
    section, key = path.split(".") if "." in path else (None, path)
    (fields[section] if section else fields)[key] = value
  return ml_collections.ConfigDict(fields)


def test_unknown_field_is_named_with_a_suggestion():
  config = demo.get_config()
  config.train.stpes = 3
  with pytest.raises(config_check.ConfigError,
                     match=r"^config.train.stpes: unknown field; did you mean config.train.steps\?$"):
    config_check.validate(config)
  with pytest.raises(config_check.ConfigError, match=r"config.zzz: unknown field; known fields"):
    config_check.validate(loaded(zzz=dict(a=1)))


def test_mistyped_fields_name_field_type_and_value():
  config = loaded(**{"data.image_size": "64", "train.async_checkpoints": "yes",
                     "train.steps": True, "loss.chunked": 3, "mesh": 8})
  with pytest.raises(config_check.ConfigError) as raised:
    config_check.validate(config)
  assert sorted(str(raised.value).splitlines()) == sorted([
      "5 config errors:",
      "  config.data.image_size: expected int, got str '64'",
      "  config.loss.chunked: expected str or bool, got int 3",
      "  config.mesh: expected dict, got int 8",
      "  config.train.steps: expected int, got bool True",
      "  config.train.async_checkpoints: expected bool, got str 'yes'"])


def test_fields_of_several_types_and_ints_for_floats_pass():
  config = config_check.validate(loaded(**{"model.image": "B/16", "model.text": "B",
                                           "loss.chunked": True, "optim.lr": 1}))
  assert (config.model.image, config.loss.chunked, config.optim.lr) == ("B/16", True, 1)
  config_check.validate(loaded(**{"model.image": dict(patch_size=8, width=32, depth=1, heads=2)}))


def test_missing_fields_are_filled_from_base_and_logged(caplog):
  # An older run's config.json: no data.workers, no wandb, a short
  # distributed; a mesh is taken whole (an axis not given is 1).
  old = json.loads(demo.get_config().to_json_best_effort())
  del old["data"]["workers"], old["wandb"], old["distributed"]["auto"]
  old["mesh"] = dict(data=8)
  config = ml_collections.ConfigDict(old)
  config.lock()  # as config_flags hands it over
  with caplog.at_level(logging.INFO, logger="alip_jax.config_check"):
    filled = config_check.validate(config)
  assert filled.to_dict() == {**demo.get_config().to_dict(), "mesh": dict(data=8)}
  assert "workers" not in config.data  # the given config is left as it was
  (line,) = [r.getMessage() for r in caplog.records]
  assert line.startswith("config: missing fields filled with their defaults (configs/base.py):")
  for field in ("config.data.workers", "config.distributed.auto", "config.wandb"):
    assert field in line


def run_main(tmp_path, *args):
  return subprocess.run([sys.executable, "-m", "alip_jax.main", "--workdir", str(tmp_path / "w"),
                         *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_typos_give_the_message_not_a_traceback(tmp_path):
  result = run_main(tmp_path, "--config", "configs/demo.py", "--config.train.stpes=3")
  assert result.returncode != 0
  assert result.stderr.strip() == (
      "error: config.train.stpes: unknown field; did you mean config.train.steps?")
  # A typo inside a config file: found after absl parsed it.
  path = tmp_path / "mine.py"
  path.write_text("from alip_jax.configs import demo\n\n\ndef get_config():\n"
                  "  c = demo.get_config()\n  c.optim.warmup_step = 5\n  return c\n")
  result = run_main(tmp_path, "--config", str(path))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert ("error: config.optim.warmup_step: unknown field; did you mean "
          "config.optim.warmup_steps?") in result.stderr
  assert not os.path.exists(tmp_path / "w")
