"""Published per-chip figures of Cloud TPUs: the one table the MFU line and the
ahead-of-time fit check (benchmarks/tpu_compile.py) read.

One JAX device is one chip: v4 and v5p run their two TensorCores as one
"megacore" device, v5e and v6e have one TensorCore per chip. Sources: the
Cloud TPU system-architecture pages (peak dense bf16 FLOP/s, HBM capacity and
bandwidth per chip).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TpuChip:
  device_kind: str     # jax.Device.device_kind
  hbm_gib: float       # HBM per chip
  peak_tflops: float   # dense bf16
  hbm_gbps: float      # HBM bandwidth, GB/s
  cores_per_chip: int  # TensorCores (accelerator type names count these on v4/v5p)
  chip_config: str     # libtpu chip config of one JAX device per chip
  accelerator_prefix: str  # e.g. 'v5litepod' in 'v5litepod-256'


TPU_CHIPS = {
    "v4": TpuChip("TPU v4", 32, 275, 1200, 2, "megacore", "v4"),
    "v5e": TpuChip("TPU v5 lite", 16, 197, 819, 1, "default", "v5litepod"),
    "v5p": TpuChip("TPU v5", 95, 459, 2765, 2, "megacore", "v5p"),
    "v6e": TpuChip("TPU v6 lite", 32, 918, 1640, 1, "default", "v6e"),
}


def tpu_chip(device_kind: str) -> TpuChip | None:
  """The chip whose device_kind is exactly `device_kind` ('TPU v5' is v5p,
  'TPU v5 lite' is v5e), or None."""
  return next((c for c in TPU_CHIPS.values() if c.device_kind == device_kind), None)
