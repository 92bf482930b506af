#!/usr/bin/env bash
# The README's first command: install everything, build the embedded corpus
# and train the four demo objectives, then print the comparison table.
#   bash launch/demo.sh [--workdir runs/demo] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh build,tfds,plots
# The demo is CPU-sized. Once tests/run.sh has put libtpu into .venv (for the
# ahead-of-time TPU compiles), JAX probes for a TPU at start-up and libtpu
# prints warnings; where no TPU (/dev/accel*, /dev/vfio/*) or NVIDIA GPU is
# visible, say CPU. JAX_PLATFORMS=… overrides.
if [ -z "${JAX_PLATFORMS:-}" ] && ! ls /dev/accel* /dev/vfio/[0-9]* >/dev/null 2>&1 &&
    ! command -v nvidia-smi >/dev/null 2>&1; then
  export JAX_PLATFORMS=cpu
fi
start=$(date +%s)
python -m alip_jax.demo "$@"
echo "demo: $(( $(date +%s) - start )) s wall time (install not included)" >&2
