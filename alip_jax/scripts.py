"""The console scripts of pyproject.toml ([project.scripts]): each runs its
command module's main; a missing extra (alip_jax/extras.py), at import or at
run time, is one line and exit status 1, not a traceback."""

from __future__ import annotations

import importlib
import sys

from alip_jax import extras


def _command(module: str, function: str):
  def script():
    try:
      return getattr(importlib.import_module(module), function)()
    except extras.MissingExtra as e:
      sys.exit(f"error: {e}")
  script.__name__ = script.__qualname__ = module.rsplit(".", 1)[-1]
  return script


train = _command("alip_jax.main", "run")
evaluate = _command("alip_jax.evaluate", "run")
build = _command("alip_jax.tools.build", "main")
export = _command("alip_jax.export_cli", "main")
demo = _command("alip_jax.demo", "run")
score = _command("alip_jax.score", "main")
filter = _command("alip_jax.filter", "main")  # noqa: A001 -- the command's name
launch = _command("alip_jax.launch_scripts", "main")
