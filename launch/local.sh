#!/usr/bin/env bash
# Several JAX processes on this machine (one per GPU on a multi-GPU box, or a
# multi-process rehearsal on CPU), coordinated on 127.0.0.1.
#
#   NUM_PROCESSES=2 CONFIG=configs/demo.py WORKDIR=runs/local bash launch/local.sh \
#       [--config.field=value ...]
#
# Variables: NUM_PROCESSES (default: the number of GPUs nvidia-smi lists, else
# 1), CONFIG, WORKDIR, PORT (default 12355), VENV (default .venv). With GPUs,
# process i sees GPU i only. On CPU, set
# XLA_FLAGS=--xla_force_host_platform_device_count=N for N devices per process.
# Ctrl-C or SIGTERM reaches every process: each saves and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CONFIG:?set CONFIG, e.g. configs/demo.py}"
: "${WORKDIR:?set WORKDIR}"
VENV=${VENV:-.venv}
PORT=${PORT:-12355}
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi --list-gpus | wc -l)
fi
NUM_PROCESSES=${NUM_PROCESSES:-$(( gpus > 0 ? gpus : 1 ))}

pids=()
# shellcheck disable=SC2329  # called by the trap
forward() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap forward TERM INT
for (( i = 0; i < NUM_PROCESSES; i++ )); do
  if (( gpus > 0 )); then export CUDA_VISIBLE_DEVICES=$i; fi
  "$VENV/bin/python" -m alip_jax.main --config "$CONFIG" --workdir "$WORKDIR" \
      --config.distributed.coordinator="127.0.0.1:$PORT" \
      --config.distributed.num_processes="$NUM_PROCESSES" \
      --config.distributed.process_id="$i" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
wait  # a signal interrupts `wait`: let every process finish its save
exit "$status"
