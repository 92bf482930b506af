#!/usr/bin/env bash
# The GPU benchmark run, in one command that fits in 10 minutes on one H100/H200:
#   1. cuDNN attention check: does model.attention='cudnn' (padded 77 → 80,
#      197 → 200) compile to cuDNN's fused kernel and match XLA in bf16?
#   2. alip_jax vs open_clip (python -m alip_jax.benchmarks.versus_torch):
#      ViT-B/16 + text B, batch $BATCH, pairs and triplets, bf16, AdamW, clip 1.0;
#   3. a profile of the B/16 ALIP step (python -m alip_jax.benchmarks.profile_step);
#   4. the XLA-flag / model-option A/B (python -m alip_jax.benchmarks.xla_flags)
#      for whatever time is left of $ALIP_BENCH_BUDGET_S (default 540 s).
#
#   bash launch/gpu_bench.sh [OUT_DIR]          # on the GPU machine, from the repository root
#   bash launch/gpu_bench.sh --smoke [OUT_DIR]  # the rehearsal on a CPU (tiny towers, minutes)
#
# Results land in OUT_DIR (default: $OUT, else /tmp/gpu_bench): versus_torch.jsonl,
# attention_check.jsonl, profile_summary.json, xla_flags.jsonl and log.txt (every
# table printed). Copy the tables into docs/BENCHMARKS.md with the machine and date.
#
# Packages: the lent GPU machine has torch (CUDA), torchvision, timm, jax with the
# CUDA plugin, flax, optax and orbax, but not grain, array_record, ml_collections,
# portpicker, open_clip_torch, ftfy or wcwidth. Bring them as Python 3.12 wheels
# in .whl/ at the repository root (git-ignored; never commit them), fetched where
# pip can reach PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl grain==0.2.18 array-record==0.8.6 \
#     ml-collections==1.1.0 portpicker==1.6.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
# and carry .whl/ with the working tree (about 7 MB; it is git-ignored, so a tool
# that ships only tracked and untracked-not-ignored files must be told to carry
# it, e.g. the device tool's carry=[".whl"]). This script installs them
# into /tmp/site (--no-index --no-deps: nothing already installed changes).
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=""
if [ "${1:-}" = "--smoke" ]; then smoke="--smoke"; shift; fi
out=$(realpath -m "${1:-${OUT:-/tmp/gpu_bench}}")
mkdir -p "$out"
budget=${ALIP_BENCH_BUDGET_S:-540}
BATCH=${BATCH:-512}
start=$(date +%s)
log="$out/log.txt"
left() { echo $(( budget - ($(date +%s) - start) )); }
say() { echo "== $* (at $(( $(date +%s) - start )) s)" | tee -a "$log"; }

if [ -z "$smoke" ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python=${PYTHON:-python3}
[ -n "$smoke" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
# One compile per configuration: versus_torch's triplet step, the profile and
# the A/B baseline are the same program.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/alip_jax_cache}
if [ -n "$smoke" ]; then
  export JAX_PLATFORMS=cpu
  unset XLA_FLAGS
  config="configs/demo.py"
  overrides=(--config.data.synthetic=False --config.mesh.data=1 --config.train.batch_size=8
             --vocab=1000)
else
  config="configs/alip_yfcc15m.py:B/16"
  overrides=(--config.train.batch_size=$BATCH)
fi

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" -c "import jax; print('jax', jax.__version__, jax.devices())"
} 2>&1 | tee -a "$log"

say "1. cuDNN attention check"
timeout 120 "$python" -m alip_jax.benchmarks.attention_check $smoke \
    > "$out/attention_check.jsonl" 2>>"$log.stderr"
cat "$out/attention_check.jsonl" | tee -a "$log"

say "2. alip_jax vs open_clip"
timeout $(( $(left) - 150 > 60 ? $(left) - 150 : 60 )) \
    "$python" -m alip_jax.benchmarks.versus_torch $smoke --batch="$BATCH" --out="$out/versus" \
    --case_timeout=200 2>>"$log.stderr" | tee -a "$log"
cp "$out/versus/results.jsonl" "$out/versus_torch.jsonl" 2>/dev/null && rm -r "$out/versus"

say "3. profile of the ALIP step"
timeout $(( $(left) > 150 ? 150 : $(left) )) \
    "$python" -m alip_jax.benchmarks.profile_step --config="$config" "${overrides[@]}" --steps=5 \
    --out=/tmp/alip_gpu_profile 2>>"$log.stderr" | tail -n 30 | tee -a "$log"
cp /tmp/alip_gpu_profile/profile_summary.json "$out/" 2>/dev/null

say "4. XLA flag / model option A/B ($(left) s left)"
if [ "$(left)" -gt 60 ]; then
  ab_args=(--config="$config" --batch="$BATCH" --steps=15)
  [ -n "$smoke" ] && ab_args=(--config="$config" --smoke --steps=2)
  timeout $(( $(left) - 10 )) "$python" -m alip_jax.benchmarks.xla_flags "${ab_args[@]}" \
      --budget_s=$(( $(left) - 20 )) --variant_timeout=150 --out="$out/ab" \
      2>>"$log.stderr" | tee -a "$log"
  cp "$out/ab/xla_flags.jsonl" "$out/" 2>/dev/null && rm -r "$out/ab"
fi
tail -n 40 "$log.stderr" > "$out/stderr_tail.txt" 2>/dev/null; rm -f "$log.stderr"
say "done: $(ls "$out" | tr '\n' ' ')"
