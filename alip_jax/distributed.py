"""Multi-host start-up: `jax.distributed.initialize` before anything touches
the devices.

* SLURM jobs (more than one task), GKE TPU pods (TPU_WORKER_HOSTNAMES), and
  `config.distributed.auto=True` (what launch/tpu_pod.sh sets: JAX finds a
  TPU VM pod's workers from the metadata server):
  `jax.distributed.initialize()` with no arguments.
* Anything else (GPU clusters without SLURM, local multi-process tests):
  `config.distributed.coordinator` ('host:port' of process 0),
  `num_processes` and `process_id`, all three.
* One process (the default): nothing to do.
On CPU, cross-process collectives use gloo.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def _cluster_detected() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  # TPU VM pod slices: several workers listed by the TPU runtime.
  return len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize(config) -> None:
  """Initialises JAX's distributed runtime when the run spans processes."""
  settings = config.distributed
  coordinator = settings.coordinator
  if coordinator:
    num_processes, process_id = settings.num_processes, settings.process_id
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(
          f"config.distributed: coordinator={coordinator!r} needs num_processes >= 1 and "
          f"0 <= process_id < num_processes, got {num_processes} and {process_id}")
    if settings.platform == "cpu" or os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  elif settings.auto or _cluster_detected():
    jax.distributed.initialize()
  else:
    return
  log.info("process %d of %d, %d local of %d devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
