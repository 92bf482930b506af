"""Device mesh from config, and the shardings of batches and replicated state."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "model")


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """Mesh with axes ('data', 'model'); one size may be -1 (= the rest).

  Axes are Auto (GSPMD decides the collectives): we write the global-batch
  loss as if on one device and let XLA shard it.
  """
  devices = np.asarray(devices if devices is not None else jax.devices())
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, process_count: int) -> int:
  """Returns the per-process batch, or says exactly what does not divide."""
  data = mesh.shape["data"]
  if global_batch % data:
    raise ValueError(
        f"config.train.batch_size={global_batch} is not divisible by the mesh's "
        f"data axis size {data} (mesh {dict(mesh.shape)}); use a multiple of {data}, "
        f"e.g. {max(data, global_batch - global_batch % data)}.")
  if global_batch % process_count:
    raise ValueError(
        f"config.train.batch_size={global_batch} is not divisible by the "
        f"{process_count} JAX processes; use a multiple of {process_count}.")
  return global_batch // process_count
