# shellcheck shell=bash
# Sourced by launch/demo.sh and tests/run.sh: finds Python 3.12, makes .venv
# (once), and installs this checkout as the editable package alip-jax with the
# extras given as $1 (e.g. "build,tfds,plots"), at the versions of
# constraints.txt (pyproject.toml declares ranges; the constraints are what we
# test, so our runs reproduce).
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

# setup_venv EXTRAS: the install runs again only when pyproject.toml,
# constraints.txt or EXTRAS changed, or the venv's alip_jax is another
# checkout's.
setup_venv() {
  local extras="$1" venv="${VENV:-.venv}" start stamp
  start=$(date +%s)
  stamp="$venv/.alip_jax-install"
  if [ ! -x "$venv/bin/python" ]; then
    "$(find_python312)" -m venv "$venv"
  fi
  if cmp -s <(cat pyproject.toml constraints.txt; echo "$extras") "$stamp" &&
      "$venv/bin/python" -c "import sys, alip_jax.configs as c
sys.exit(c.__path__[0] != sys.argv[1])" "$PWD/configs" 2>/dev/null; then
    echo "install: alip-jax[$extras] in $venv is up to date" >&2
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt -e ".[$extras]"
    cat pyproject.toml constraints.txt > "$stamp"
    echo "$extras" >> "$stamp"
    echo "install: alip-jax[$extras] (editable, constraints.txt) into $venv in" \
      "$(( $(date +%s) - start )) s" >&2
  fi
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
