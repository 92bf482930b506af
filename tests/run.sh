#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): install and test.
#   bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh requirements-test.txt

# The HF parity tests run transformers' CLIPModel in torch in a second venv
# (.venv-torch, Python 3.11: torch's CPU build exists here for 3.11 only).
if [ "${ALIP_SKIP_TORCH:-0}" != 1 ]; then
  start=$(date +%s)
  if [ ! -x .venv-torch/bin/python ]; then
    python311=$(find_python 3.11 "${PYTHON311:-}") || { echo "error: Python 3.11 not found for the torch reference venv;" \
      "set PYTHON311=, or ALIP_SKIP_TORCH=1 to skip the HF parity tests" >&2; exit 1; }
    "$python311" -m venv .venv-torch
  fi
  torch_wheel=""
  for candidate in /opt/wheels/torch-2.13.0+cpu-cp311-*.whl; do
    [ -e "$candidate" ] && torch_wheel="$candidate"
  done
  # With the local CPU wheel given first, pip does not fetch the CUDA build.
  .venv-torch/bin/python -m pip install --quiet --disable-pip-version-check \
      ${torch_wheel:+"$torch_wheel"} -r requirements-torch.txt
  .venv-torch/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
      -r requirements-openclip.txt
  export ALIP_TORCH_PYTHON="$PWD/.venv-torch/bin/python"
  echo "install: requirements-torch.txt into .venv-torch in $(( $(date +%s) - start )) s" >&2
fi
# Two workers: on the 2-core CI machine this halves the wall time.
# The slowest tests are listed so that CI logs show where the time goes.
python -m pytest -n "${PYTEST_WORKERS:-2}" --durations=20 "$@"
