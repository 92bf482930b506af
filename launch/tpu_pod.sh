#!/usr/bin/env bash
# Training on a TPU VM pod slice: create the TPU (or reuse it), copy this
# checkout to every worker, install, and start alip_jax.main on all workers
# at once. Run it from the repository root, on a machine with gcloud.
#
#   TPU_NAME=alip-v5e-32 ZONE=us-west4-a ACCELERATOR_TYPE=v5litepod-32 \
#   RUNTIME_VERSION=v2-alpha-tpuv5-lite \
#   CONFIG=configs/alip_yfcc15m.py:B/16 WORKDIR=gs://my-bucket/runs/alip_b16 \
#   DATA_BUCKET=my-data DATA_SUBDIR=yfcc15m \
#     bash launch/tpu_pod.sh [--config.field=value ...]
#
# Variables:
#   TPU_NAME, ZONE         the TPU VM and its zone (required); PROJECT: default gcloud's.
#   ACCELERATOR_TYPE, RUNTIME_VERSION
#                          used only when TPU_NAME does not exist yet: it is
#                          then asked for as a queued resource of that name;
#                          SPOT=1 asks for Spot capacity (preemptible: re-run
#                          this script after a preemption and the run resumes).
#   CONFIG                 config file[:arg] (required).
#   WORKDIR                gs://… (required): every host reads and writes it,
#                          and it outlives the VMs. Checkpoints, metrics,
#                          TensorBoard and the W&B run id live there.
#   DATA_DIR               the ArrayRecord directory as every worker sees it, or
#   DATA_BUCKET            a bucket to mount read-only with gcsfuse at
#                          /tmp/alip_data on every worker (DATA_SUBDIR: the
#                          folder of shards in it). Neither: the config's own
#                          (the demo builds its small corpus on each worker).
#   JAX_VERSION            default 0.12.0.1 (jax[tpu], with libtpu from PyPI).
#   STEPS                  which steps to run: 'create ship install train' (default).
#   REMOTE_DIR             where the code goes on the workers (default alip_jax).
#
# SIGTERM from a maintenance event reaches every process: they agree on a
# step through Orbax's preemption sync, save it and exit
# (alip_jax/checkpointing/preemption.py).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME, the TPU VM name}"
: "${ZONE:?set ZONE, e.g. us-west4-a}"
: "${CONFIG:?set CONFIG, e.g. configs/alip_yfcc15m.py:B/16}"
: "${WORKDIR:?set WORKDIR to a gs:// path}"
case "$WORKDIR" in
  gs://*) ;;
  *) echo "error: WORKDIR=$WORKDIR: on a pod every host needs the same workdir; use gs://BUCKET/…" >&2
     exit 2 ;;
esac
STEPS=${STEPS:-create ship install train}
JAX_VERSION=${JAX_VERSION:-0.12.0.1}
REMOTE_DIR=${REMOTE_DIR:-alip_jax}
GCLOUD=(gcloud compute tpus)
LOCATION=(--zone="$ZONE")
if [ -n "${PROJECT:-}" ]; then LOCATION+=(--project="$PROJECT"); fi

on_all_workers() {
  "${GCLOUD[@]}" tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$1"
}

create() {
  if "${GCLOUD[@]}" tpu-vm describe "$TPU_NAME" "${LOCATION[@]}" >/dev/null 2>&1; then
    echo "reusing TPU VM $TPU_NAME"
    return
  fi
  : "${ACCELERATOR_TYPE:?TPU $TPU_NAME does not exist: set ACCELERATOR_TYPE (e.g. v5litepod-32) to create it}"
  : "${RUNTIME_VERSION:?set RUNTIME_VERSION (e.g. v2-alpha-tpuv5-lite, v2-alpha-tpuv6e)}"
  local spot=()
  if [ "${SPOT:-0}" = 1 ]; then spot=(--spot); fi
  "${GCLOUD[@]}" queued-resources create "$TPU_NAME" "${LOCATION[@]}" --node-id="$TPU_NAME" \
      --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION" "${spot[@]}"
  local state=""
  until [ "$state" = ACTIVE ]; do
    state=$("${GCLOUD[@]}" queued-resources describe "$TPU_NAME" "${LOCATION[@]}" \
        --format='value(state.state)')
    case "$state" in
      FAILED|SUSPENDED) echo "error: queued resource $TPU_NAME is $state" >&2; exit 1 ;;
      ACTIVE) ;;
      *) echo "queued resource $TPU_NAME: $state"; sleep "${POLL_SECONDS:-60}" ;;
    esac
  done
}

ship() {
  # The committed tree (git archive), not local build outputs or venvs.
  local archive
  archive=$(mktemp --suffix=.tar.gz)
  git archive --format=tar.gz -o "$archive" HEAD
  "${GCLOUD[@]}" tpu-vm scp "$archive" "$TPU_NAME:alip_jax.tar.gz" "${LOCATION[@]}" --worker=all
  rm -f "$archive"
  on_all_workers "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf alip_jax.tar.gz -C $REMOTE_DIR"
}

install() {
  # TPU VM images ship an older Python; uv brings 3.12 (jax >= 0.11 needs it).
  on_all_workers "set -e; cd $REMOTE_DIR
    command -v uv >/dev/null || python3 -m pip install --user --quiet uv
    export PATH=\$HOME/.local/bin:\$PATH
    [ -x .venv/bin/python ] || uv venv --quiet --python 3.12 .venv
    uv pip install --quiet --python .venv/bin/python -c constraints.txt -e '.[cloud]' 'jax[tpu]==$JAX_VERSION'"
}

train() {
  local data_flag="" mount=""
  if [ -n "${DATA_BUCKET:-}" ]; then
    mount="mkdir -p /tmp/alip_data; mountpoint -q /tmp/alip_data || gcsfuse -o ro --implicit-dirs $DATA_BUCKET /tmp/alip_data || { echo 'gcsfuse is needed for DATA_BUCKET (see the Cloud Storage FUSE install guide)' >&2; exit 1; };"
    data_flag="--config.data.dir=/tmp/alip_data/${DATA_SUBDIR:-}"
  elif [ -n "${DATA_DIR:-}" ]; then
    data_flag="--config.data.dir=$DATA_DIR"
  fi
  local args="" arg
  for arg in "$@"; do args+=" $(printf '%q' "$arg")"; done
  on_all_workers "set -e; $mount cd $REMOTE_DIR
    .venv/bin/python -m alip_jax.main --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR") \\
      --config.distributed.auto=True $data_flag$args"
}

for step in $STEPS; do
  case "$step" in
    create) create ;;
    ship) ship ;;
    install) install ;;
    train) train "$@" ;;
    *) echo "error: unknown step '$step' in STEPS (create ship install train)" >&2; exit 2 ;;
  esac
done
