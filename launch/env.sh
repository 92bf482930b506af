# shellcheck shell=bash
# Sourced by launch/demo.sh and tests/run.sh: finds Python 3.12, makes .venv
# (once), installs the pinned requirements file given as $1 and this checkout
# as the editable package.
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

# install_package VENV: this checkout as the editable package alip-jax (console
# scripts, alip_jax.configs); again only when pyproject.toml changed or the
# venv's install points at another checkout.
install_package() {
  local venv="$1" stamp="$1/.alip_jax-pyproject.toml"
  if cmp -s pyproject.toml "$stamp" && "$venv/bin/python" -c "import sys, alip_jax.configs as c
sys.exit(c.__path__[0] != sys.argv[1])" "$PWD/configs" 2>/dev/null; then
    return 0
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . &&
    cp pyproject.toml "$stamp"
}

setup_venv() {
  local requirements="$1" venv="${VENV:-.venv}" start
  start=$(date +%s)
  if [ ! -x "$venv/bin/python" ]; then
    "$(find_python312)" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  install_package "$venv"
  echo "install: $requirements and alip_jax (editable) into $venv in $(( $(date +%s) - start )) s" >&2
  # shellcheck disable=SC1091
  source "$venv/bin/activate"
}

setup_venv "$1"

# XLA:CPU allocates each step's temporaries afresh (the demo's step: 376 MiB)
# and glibc maps large blocks in 4 KiB pages, so every step page-faults them
# in again: a third of the demo's CPU time went to the kernel. With
# madvise(MADV_HUGEPAGE) on those blocks the faults fall ~30-fold
# (docs/BENCHMARKS.md, "The demo on a 2-core CPU"). Numerics are unchanged.
case ":${GLIBC_TUNABLES:-}:" in
  *glibc.malloc.hugetlb=*) ;;
  *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
