#!/usr/bin/env bash
# The README's second command (and what .ci/run calls): install and test.
#   bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh requirements-test.txt
python -m pytest "$@"
