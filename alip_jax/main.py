"""Command line: train and evaluate one config.

  python -m alip_jax.main --config configs/demo.py --workdir /tmp/alip_demo \
      --config.train.steps=200

Re-running the same command resumes from the newest checkpoint in --workdir.
Installed, `alip-train` is the same command. `--config configs/X.py` falls
back to the shipped copy of configs/X.py (the package alip_jax.configs) when
the working directory has no such file, so it runs from any directory.
"""

import sys

from absl import app, flags
import jax
from ml_collections import config_flags

from alip_jax import checkpointing, config_check, console, distributed, mesh, train
from alip_jax.checkpointing import lease
from alip_jax.data import records
from alip_jax.tools import synthetic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and eval.json.")
_BREAK_LEASE = flags.DEFINE_bool(
    "break_lease", False, "Break a stale writer lease on --workdir (one whose trainer stopped "
    "renewing it: killed on another host). Only when no other trainer uses the workdir.")
flags.mark_flags_as_required(["config", "workdir"])

# Refusals of the user's config, workdir or data, and the stops whose message
# says what to do (a failed save, a diverged run): one `error:` line each.
USER_ERRORS = (config_check.ConfigError, lease.LeaseHeld, checkpointing.RunConfigMismatch,
               checkpointing.StateShapeMismatch, checkpointing.NoReadableCheckpoint,
               records.CorruptShardError, records.ShardMismatchError, mesh.BatchSizeError,
               checkpointing.SaveFailed, FloatingPointError)


def main(argv):
  del argv
  console.setup_logging()
  try:
    config = config_check.validate(_CONFIG.value)
  except config_check.ConfigError as e:
    raise SystemExit(f"error: {e}") from None  # the message, no traceback
  distributed.initialize(config)
  synthetic.prepare(config, _WORKDIR.value)  # the embedded corpus, if asked for and missing
  result = console.exit_on_user_errors(
      lambda: train.train_and_evaluate(config, _WORKDIR.value, break_lease=_BREAK_LEASE.value),
      USER_ERRORS)
  if jax.process_index() == 0:
    print(" ".join(f"{k}={v:.4f}" for k, v in result.eval.items() if "R@" in k))


def run():
  """The `alip-train` console script (and `python -m alip_jax.main`)."""
  argv = console.with_packaged_config(sys.argv)
  try:  # before absl parses them: a typo there is a traceback
    config_check.check_overrides(argv)
  except config_check.ConfigError as e:
    sys.exit(f"error: {e}")
  console.run_absl(main, __name__, argv)


if __name__ == "__main__":
  run()
