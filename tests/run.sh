#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): install and test.
#   bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh build,tfds,plots,test

# The torch side of the HF parity and interop tests (transformers' CLIPModel,
# open_clip) runs in a second venv, .venv-torch: Python 3.11, torch with its
# matching torchvision (PyPI's CUDA builds, which run on CPUs; torchvision's
# compiled ops link torch's own libraries, so a CPU-only torch does not load
# PyPI's torchvision, and open_clip imports torchvision). ~5.6 GB, once per
# clone. The versions: constraints.txt.
if [ "${ALIP_SKIP_TORCH:-0}" != 1 ]; then
  start=$(date +%s)
  if [ ! -x .venv-torch/bin/python ]; then
    python311=$(find_python 3.11 "${PYTHON311:-}") || { echo "error: Python 3.11 not found for the torch reference venv;" \
      "set PYTHON311=, or ALIP_SKIP_TORCH=1 to skip the HF parity tests" >&2; exit 1; }
    "$python311" -m venv .venv-torch
  fi
  if ! cmp -s <(cat requirements-torch.txt constraints.txt) .venv-torch/.alip_jax-install; then
    .venv-torch/bin/python -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -r requirements-torch.txt
    cat requirements-torch.txt constraints.txt > .venv-torch/.alip_jax-install
  fi
  export ALIP_TORCH_PYTHON="$PWD/.venv-torch/bin/python"
  echo "install: requirements-torch.txt into .venv-torch in $(( $(date +%s) - start )) s" >&2
fi
# Two workers: on the 2-core CI machine this halves the wall time.
# The slowest tests are listed so that CI logs show where the time goes.
python -m pytest -n "${PYTEST_WORKERS:-2}" --durations=20 "$@"
