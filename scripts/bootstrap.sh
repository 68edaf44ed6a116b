#!/usr/bin/env bash
# Create .venv (Python >= 3.10) and install curation-spark with its test extra, once per
# change of setup.py. Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${CURATION_SPARK_VENV:-$ROOT/.venv}"

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "curation-spark needs Python >= 3.10")'
command -v java >/dev/null 2>&1 || { echo "curation-spark needs a JDK 17 (java on PATH)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
STAMP="$VENV/.curation-spark-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ]; then
  echo "[bootstrap] installing curation-spark and its dependencies (pyspark, delta-spark, faiss-cpu, ...)"
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export PYSPARK_PYTHON="$VENV/bin/python"
export PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
# The Delta Lake jars (io.delta:delta-spark_2.13 and its dependencies) are resolved from Maven
# Central once, with Ivy's output in a log file, into a cache folder ($CURATION_SPARK_JARS, else
# ~/.cache/curation-spark/jars/; curation_spark/io/delta_jars.py); sessions then put them on the
# classpath with spark.jars: no Ivy output and no network on a start. A failure here is not fatal
# (sessions fall back to Parquet only, with a warning).
if DELTA_JARS="$("$VENV/bin/python" -m curation_spark.io.delta_jars)"; then
  echo "[bootstrap] Delta Lake jars: $DELTA_JARS"
else
  echo "[bootstrap] warning: no Delta Lake jars (see the line above); Spark sessions will be Parquet-only" >&2
fi
