#!/usr/bin/env bash
# The README's first command: install everything, build the embedded corpus
# and train the four demo objectives, then print the comparison table.
#   bash launch/demo.sh [--workdir runs/demo] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh requirements.txt
start=$(date +%s)
python -m alip_jax.demo "$@"
echo "demo: $(( $(date +%s) - start )) s wall time (install not included)" >&2
