"""What the console scripts of pyproject.toml share (`alip-train`, `alip-eval`,
`alip-demo`): absl's app.run as a script, the shipped configs, and logging."""

from __future__ import annotations

import importlib.resources
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging


def run_absl(main, module_name: str, argv: list[str] | None = None) -> None:
  """app.run(main) for a console script. absl's --help lists the flags of the
  module that sys.argv[0] names, which for a script is the script itself, so
  the flags of `module_name` (the command's module) are declared key there."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, argv=argv)


def with_packaged_config(argv: list[str]) -> list[str]:
  """`argv` with a `--config configs/NAME.py[:variant]` that does not exist
  from the working directory replaced by the shipped copy of that file (the
  package alip_jax.configs), so the installed commands run the shipped
  configs from any directory."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      index, prefix, value = i, "--config=", arg.removeprefix("--config=")
    elif arg == "--config" and i + 1 < len(argv):
      index, prefix, value = i + 1, "", argv[i + 1]
    else:
      continue
    path, colon, variant = value.partition(":")
    if path.startswith("configs/") and not os.path.exists(path):
      shipped = importlib.resources.files("alip_jax.configs") / path.removeprefix("configs/")
      if shipped.is_file():
        print(f"config: no {path} under {os.getcwd()}; using the shipped {shipped}",
              file=sys.stderr)
        argv[index] = prefix + str(shipped) + colon + variant
    break
  return argv


def setup_logging() -> None:
  """Our INFO lines on stderr; libraries (Orbax is chatty) at WARNING."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("alip_jax").setLevel(logging.INFO)


def exit_on_user_errors(fn, errors: tuple):
  """fn(); an error of a type in `errors` (the refusal of a user's input, config
  or directory, or a failed save: each message says what to do) ends the
  process with that one `error: …` line and status 1, its traceback only with
  ALIP_DEBUG=1. The line is the last thing printed: background threads still
  winding down (an Orbax save that failed logs its own traceback) print to
  /dev/null after it."""
  if os.environ.get("ALIP_DEBUG") == "1":
    return fn()
  try:
    return fn()
  except errors as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    sys.exit(1)
