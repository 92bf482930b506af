# Sourced by launch/demo.sh and tests/run.sh: finds Python 3.12, makes .venv
# (once) and installs the pinned requirements file given as $1.
# Set PYTHON=/path/to/python3.12 to choose the interpreter.

find_python312() {
  local candidate
  for candidate in "${PYTHON:-}" python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
      /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.12 not found (jax >= 0.11 needs it); install it or set PYTHON=" >&2
  return 1
}

setup_venv() {
  local requirements="$1" venv="${VENV:-.venv}" start
  start=$(date +%s)
  if [ ! -x "$venv/bin/python" ]; then
    "$(find_python312)" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "install: $requirements into $venv in $(( $(date +%s) - start )) s" >&2
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
}

setup_venv "$1"
