#!/usr/bin/env bash
# The README test command: bootstrap, then the whole pytest suite (including the tests
# that start a Spark standalone cluster on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec python -m pytest -q "$@"
