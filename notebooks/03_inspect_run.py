# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Inspect a run
# MAGIC
# MAGIC What a run folder holds: per-level statistics from `run.json`, the level tables, the curated tables
# MAGIC sampled so far, and the figures of the run's HTML report (`run.report()`).
# MAGIC
# MAGIC | widget | environment variable | meaning |
# MAGIC |---|---|---|
# MAGIC | `run` | `CURATION_RUN` | run folder |
# MAGIC | `table` | `CURATION_TABLE` | curated table to describe (default: the last one written) |
# MAGIC | `report_dir` | `CURATION_REPORT_DIR` | local folder for the report and its figures (default `<run>/report`, or `./report_<run>` for remote runs) |

# COMMAND ----------

# MAGIC %pip install --quiet --no-deps faiss-cpu /Volumes/main/default/libs/curation_spark-0.1.0-py3-none-any.whl

# COMMAND ----------

import os

from curation_spark.notebook import default_run_path, on_databricks, param, show

ON_DATABRICKS = on_databricks()

run_path = param("run", "CURATION_RUN", default_run_path()).strip()
table = param("table", "CURATION_TABLE", "").strip() or None
report_dir = param("report_dir", "CURATION_REPORT_DIR", "").strip() or None

# COMMAND ----------

# MAGIC %md
# MAGIC ## Statistics from `run.json`

# COMMAND ----------

import pandas as pd

import curation_spark as cs

spark = cs.session()  # the notebook's session (Databricks, spark-submit); a local Delta session elsewhere
run = cs.open_run(run_path, spark=spark)
meta = run.metadata  # typed and validated (curation_spark.io.run_metadata)
n_levels = len(run.levels)
print(f"run {run.path}: {n_levels} complete level(s), format {meta.output_format}, input {meta.input}, "
      f"distance {run.distance}, updated {meta.updated}")

level_stats = pd.DataFrame([{
    "level": lv, "points": info.n_points, "clusters": info.n_clusters,
    "requested": info.n_clusters_requested, "engine": info.engine,
    "k-means iterations": len(info.kmeans_history), "resampling steps": len(info.resampling),
    "min size": info.sizes["min"], "median size": info.sizes["median"],
    "max size": info.sizes["max"], "gini": round(info.sizes["gini"], 3),
    "gini before resampling": round(info.sizes_kmeans["gini"], 3), "degenerate": info.degenerate,
    "objective": info.objective, "seconds": round(info.seconds, 1),
} for lv, info in enumerate(run.levels, 1)])
show(level_stats)

samples = pd.DataFrame([{"table": name, "rows": s.rows, "target size": s.target_size, "strategy": s.strategy,
                         "multiplier": s.multiplier, "seed": s.seed, "seconds": s.seconds}
                        for name, s in meta.samples.items()])
show(samples if len(samples) else pd.DataFrame({"table": ["(no curated table yet: run 02_sample)"]}))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Level tables

# COMMAND ----------

level_tables = {}
for lv in range(1, n_levels + 1):
    cents = run.centroids(lv)
    assign = run.assignments(lv)
    level_tables[lv] = {"centroids": cents, "assignments": assign}
    print(f"level {lv}: {cents.count():,} centroids, {assign.count():,} assignments")
    show(cents.drop("centroid").orderBy("size", ascending=False))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Figures

# COMMAND ----------

report_path = run.report(out=report_dir, table=table)
figures = sorted(os.path.join(os.path.dirname(report_path), f)
                 for f in os.listdir(os.path.dirname(report_path)) if f.endswith(".png"))
print(f"report: {report_path} ({len(figures)} figures)")
if ON_DATABRICKS:
    displayHTML(open(report_path, encoding="utf-8").read())  # noqa: F821 -- a Databricks notebook global
