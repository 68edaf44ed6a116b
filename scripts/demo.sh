#!/usr/bin/env bash
# The README demo: toy rings -> hierarchical k-means with resampling -> balanced sampling
# -> per-ring counts (input / uniform random / flat k-means / curated) -> HTML report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec curation-spark demo --out "${1:-runs/demo}"
