# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Cluster an embedding table
# MAGIC
# MAGIC Hierarchical k-means with resampling (Vo et al., 2024) over a table with an `id` column and an
# MAGIC `embedding` column (`array<float>`, `array<double>` or an ML `Vector`). The result is a **run
# MAGIC folder**: `level_<l>/centroids`, `level_<l>/assignments` and `run.json`. Sample curated sets from it
# MAGIC with `02_sample`, look at it with `03_inspect_run`.
# MAGIC
# MAGIC | widget | environment variable (outside Databricks) | meaning |
# MAGIC |---|---|---|
# MAGIC | `input_path` | `CURATION_INPUT` | Delta or Parquet folder with the embeddings |
# MAGIC | `input_table` | `CURATION_INPUT_TABLE` | ... or a catalog table (`catalog.schema.table`) |
# MAGIC | `run` | `CURATION_RUN` | run folder to write (or resume) |
# MAGIC | `config` | `CURATION_CONFIG` | optional YAML config file (e.g. `../conf/toy.yaml`) |
# MAGIC | `overrides` | `CURATION_OVERRIDES` | `key=value` settings separated by `;` (e.g. `clustering.n_iters=20`) |
# MAGIC | `overwrite` | `CURATION_OVERWRITE` | `true` replaces a run folder made with a different config |
# MAGIC
# MAGIC Re-running with the same settings resumes after the last completed level.

# COMMAND ----------

# MAGIC %md
# MAGIC **On Databricks** the package must be installed on the cluster (a job cluster of the bundle gets it
# MAGIC from `libraries`). In a notebook, install the wheel built with `pip wheel --no-deps -w dist .` and
# MAGIC copied to a volume (see docs/deploying/databricks.md); `--no-deps` keeps the runtime's own PySpark and Delta:

# COMMAND ----------

# MAGIC %pip install --quiet --no-deps faiss-cpu /Volumes/main/default/libs/curation_spark-0.1.0-py3-none-any.whl

# COMMAND ----------

from curation_spark.notebook import on_databricks, param, run_config_params, show

ON_DATABRICKS = on_databricks()
params = run_config_params()  # input_path / input_table, run, config, overrides -> a validated config
config, run_path = params["config"], params["run_path"]
overwrite = param("overwrite", "CURATION_OVERWRITE", "false", ["false", "true"]).strip().lower() == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## Check the configuration and the input
# MAGIC The whole config is validated before any Spark job; the input is checked in one pass (ids unique and
# MAGIC non-null, one embedding dimension, no NaN/Inf).

# COMMAND ----------

import curation_spark as cs

spark = cs.session()  # the notebook's session (Databricks, spark-submit); a local Delta session elsewhere

stats = cs.validate(config, spark=spark)
print(f"input: {stats.n_rows:,} rows, dimension {stats.dim}")
print("clustering:", {k: v for k, v in config.to_dict()["clustering"].items() if v is not None})

# COMMAND ----------

# MAGIC %md
# MAGIC ## Cluster

# COMMAND ----------

run = cs.cluster(config, spark=spark, overwrite=overwrite)

import pandas as pd

levels = pd.DataFrame([{
    "level": info.level, "points": info.n_points, "clusters": info.n_clusters,
    "min size": info.sizes["min"], "median size": info.sizes["median"], "max size": info.sizes["max"],
    "gini": round(info.sizes["gini"], 3), "objective": info.objective, "seconds": round(info.seconds, 1),
    "distance": run.distance,
} for info in run.levels])
show(levels)
if run.metadata.dedup is not None:  # a dedup section in the config: near-duplicates removed first
    d = run.metadata.dedup
    print(f"near-duplicates removed before clustering: {d.removed} of {d.points_in} ({d.groups} groups, "
          f"cosine >= {d.threshold}); table {d.path}")
print(f"run folder: {run.path}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The level tables
# MAGIC `centroids`: `cluster_id, centroid, size, flat_size` (points of the input below the cluster) and
# MAGIC `parent_id` (its cluster one level up). `assignments`: `point_id, cluster_id, distance`.

# COMMAND ----------

level_tables = {}
for level in range(1, len(run.levels) + 1):
    level_tables[level] = {"centroids": run.centroids(level), "assignments": run.assignments(level)}
    print(f"level {level}: {level_tables[level]['centroids'].count():,} centroids, "
          f"{level_tables[level]['assignments'].count():,} assignments")
show(level_tables[max(level_tables)]["centroids"].orderBy("cluster_id").drop("centroid"))
