# shellcheck shell=bash
# Sourced by launch/demo.sh and tests/run.sh: finds Python 3.12, makes .venv
# (once) and installs the pinned requirements file given as $1.
# Set PYTHON=/path/to/python3.12 to choose the interpreter.

# find_python 3.12 [PYTHON-override]: prints an interpreter of that version.
find_python() {
  local version="$1" override="${2:-}" candidate
  for candidate in "$override" "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/"python$version" \
      "/usr/local/bin/python$version" "/usr/bin/python$version"; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$version'" >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

find_python312() {
  find_python 3.12 "${PYTHON:-}" && return 0
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
