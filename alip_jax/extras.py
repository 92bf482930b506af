"""The optional parts of alip-jax (pyproject.toml's extras): a command that
needs one that is not installed says, in one line, which extra to install.

The core (`pip install alip-jax`) loads, exports, trains and evaluates on
ArrayRecord data; Beam, TFDS, matplotlib, torch and W&B come with extras.
"""

from __future__ import annotations

import importlib
import logging

# Top-level module → the extra that installs it.
EXTRA_OF = {
    "apache_beam": "build", "pyarrow": "build",
    "tensorflow_datasets": "tfds",
    "matplotlib": "plots",
    "wandb": "cloud", "gcsfs": "cloud",
    "torch": "torch", "transformers": "torch",
    "open_clip": "open_clip",
}


class MissingExtra(ImportError):
  """A module of an extra that is not installed; the message names the extra."""


def message(module: str, needed_for: str) -> str:
  extra = EXTRA_OF[module.split(".")[0]]
  return (f"{needed_for} needs alip-jax's [{extra}] extra ({module.split('.')[0]} is not "
          f"installed): pip install 'alip-jax[{extra}]'")


def require(module: str, needed_for: str):
  """Imports and returns `module`, or raises MissingExtra naming the extra
  that installs it. An import error from inside an installed module (a
  broken install) passes through as it is."""
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
      raise
    raise MissingExtra(message(module, needed_for)) from None


def require_beam(needed_for: str):
  """`require` for Beam's file systems, quietly: importing them, Beam's
  BigQuery client logs "apitools not found" without Beam's GCP extras, and
  none of our pipelines uses BigQuery."""
  logging.disable(logging.WARNING)
  try:
    return require("apache_beam.io.filesystems", needed_for)
  finally:
    logging.disable(logging.NOTSET)
