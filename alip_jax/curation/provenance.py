"""Outputs that know what made them: an output directory's manifest records
the identity of what wrote it (the model: its source, step and a hash of its
weights; the means and γ; the inputs and options), and a re-run into the same
directory by anything else is refused (or, with --overwrite, starts over)
instead of mixing two producers' rows in one output."""

from __future__ import annotations

import hashlib
import logging

import jax
import numpy as np

from alip_jax import fileio, mesh as mesh_lib, rundir

log = logging.getLogger(__name__)


class OutputMismatch(ValueError):
  """An output directory written by another model, input or option set."""


def weights_digest(params) -> str:
  """sha256 over every parameter's path, dtype, shape and values: the same on
  any mesh and process count (each leaf is gathered whole first)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    value = mesh_lib.to_host(leaf) if isinstance(leaf, jax.Array) else np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{value.dtype}:{value.shape}".encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def model_identity(loaded) -> dict:
  """What a loaded model is: where from, which step, which weights."""
  return {"source": loaded.source, "step": loaded.step,
          "weights_sha256": weights_digest(loaded.params)}


def claim(manifest_path: str, made_by: dict, overwrite: bool, start_over, output: str) -> None:
  """Makes `manifest_path` record `made_by`. If it records something else:
  with `overwrite`, `start_over()` removes the old output first; without,
  OutputMismatch lists each difference and the ways out. Writes nothing
  before the check."""
  old = fileio.read_json(manifest_path, None)
  if old is not None and old != made_by:
    changes = rundir.differences(old, made_by)
    if not overwrite:
      lines = "; ".join(f"{k}: {a!r} → {b!r}" for k, a, b in changes)
      raise OutputMismatch(
          f"{output} holds the output of another run ({lines}); nothing was written. Use a new "
          f"--out, re-run with the same model and options to resume or repeat it, or add "
          f"--overwrite to replace it.")
    log.warning("--overwrite: replacing %s, made by another run (%s)", output,
                ", ".join(k for k, _, _ in changes))
    start_over()
  fileio.makedirs(manifest_path.rsplit("/", 1)[0])
  fileio.write_json(manifest_path, made_by)
