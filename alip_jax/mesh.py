"""Device mesh from config, and how batches and parameters are sharded on it.

Axes ('data', 'fsdp', 'model'):
  data   pure data parallel: the batch is split, parameters are replicated;
  fsdp   the batch is split too, and every parameter's 'embed' dimension is
         sharded (optimiser state with it); XLA gathers each layer's weights
         when it is used (ZeRO-3 / FSDP);
  model  tensor parallel: attention heads, MLP hidden units and the vocabulary
         are split, the batch is not.
Parameters carry logical axis names (models/transformer.py); LOGICAL_RULES
below is the one table that maps them onto these axes.
"""

from __future__ import annotations

import logging
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")
LOGICAL_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("vocab", "model"),
    ("kv", None),
    ("joint", None),
    ("length", None),
    ("patch_h", None),
    ("patch_w", None),
    ("channels", None),
    ("layers", None),
)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """Mesh with axes ('data', 'fsdp', 'model'); one size may be -1 (= the rest).

  Axes are Auto (GSPMD decides the collectives): we write the global-batch
  loss as if on one device and let XLA shard it.
  """
  devices = np.asarray(devices if devices is not None else jax.devices())
  unknown = set(mesh_cfg) - set(AXES)
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; the axes are {AXES}")
  sizes = [int(mesh_cfg.get(axis, 1)) for axis in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(
          f"config.mesh {dict(zip(AXES, sizes))}: {devices.size} devices are not "
          f"divisible by the fixed axes' product {known}; choose sizes that divide {devices.size}.")
    sizes[sizes.index(-1)] = devices.size // known
  if math.prod(sizes) != devices.size:
    raise ValueError(
        f"config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices but "
        f"{devices.size} are present; set one axis to -1 to use all of them.")
  return Mesh(devices.reshape(sizes), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def batch_size_divisor(mesh: Mesh) -> int:
  """How many ways the batch is split: data × fsdp."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data × fsdp, replicated over 'model'."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fit(spec: P, shape, mesh: Mesh, path: str) -> P:
  """Drops a mesh axis from a dimension it does not divide (that dimension
  is then replicated) and says so, instead of failing at jit time."""
  dims = []
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(mesh.shape[a] for a in names)
    if ways > 1 and size % ways:
      log.info("%s: dimension %d is not divisible by mesh axes %s (%d); replicated",
               path, size, names, ways)
      axes = None
    dims.append(axes)
  return P(*dims)


def logical_shardings(abstract_boxed, mesh: Mesh, rules=LOGICAL_RULES):
  """NamedShardings for a pytree whose leaves may be `nn.LogicallyPartitioned`
  (as `jax.eval_shape(model.init, ...)` returns); unannotated leaves are
  replicated. The result has the structure of the *unboxed* tree."""
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_boxed), rules)
  values = nn.unbox(abstract_boxed)
  paths_and_values = jax.tree_util.tree_flatten_with_path(values)[0]
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  shardings = [
      NamedSharding(mesh, _fit(spec, value.shape, mesh, jax.tree_util.keystr(path)))
      for (path, value), spec in zip(paths_and_values, flat_specs)]
  return jax.tree.unflatten(jax.tree.structure(values), shardings)


def to_host(x) -> np.ndarray:
  """A global array as numpy on every process (gathers across hosts)."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class BatchSizeError(ValueError):
  """A batch size the mesh or the processes cannot split."""


def check_batch_size(global_batch: int, mesh: Mesh, process_count: int) -> int:
  """Returns the per-process batch, or says exactly what does not divide."""
  ways = batch_size_divisor(mesh)
  if global_batch % ways:
    raise BatchSizeError(
        f"config.train.batch_size={global_batch} is not divisible by the mesh's "
        f"batch axes data × fsdp = {ways} (mesh {dict(mesh.shape)}); use a multiple of "
        f"{ways}, e.g. {max(ways, global_batch - global_batch % ways)}.")
  if global_batch % process_count:
    raise BatchSizeError(
        f"config.train.batch_size={global_batch} is not divisible by the "
        f"{process_count} JAX processes; use a multiple of {process_count}.")
  return global_batch // process_count
