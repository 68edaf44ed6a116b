#!/usr/bin/env bash
# The documentation site: bootstrap (the test extra brings mkdocs, mkdocs-material and
# mkdocstrings), build it with --strict (warnings fail the build), then serve it locally.
#   bash scripts/docs.sh                  build into site/, then serve on http://127.0.0.1:8000/
#   bash scripts/docs.sh --build-only     build into site/ only (what CI checks: tests/test_docs.py)
# DOCS_ADDR=host:port moves the server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
export NO_MKDOCS_2_WARNING=1
python -m mkdocs build --strict --site-dir site
echo "[docs] built: $ROOT/site/index.html"
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
ADDR="${DOCS_ADDR:-127.0.0.1:8000}"
echo "[docs] serving on http://$ADDR/ (Ctrl-C stops)"
exec python -m mkdocs serve --strict --dev-addr "$ADDR"
