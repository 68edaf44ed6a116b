# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Sample a curated set from a run
# MAGIC
# MAGIC Hierarchical balanced sampling over the hierarchy that `01_cluster` wrote: the target size is spread
# MAGIC as evenly as possible over the top-level clusters, then recursively over their children, down to
# MAGIC the points. No re-clustering: sample as many sets (sizes, strategies, seeds) as you like from one run.
# MAGIC The curated table is written into the run folder.
# MAGIC
# MAGIC | widget | environment variable | meaning |
# MAGIC |---|---|---|
# MAGIC | `run` | `CURATION_RUN` | run folder written by `01_cluster` |
# MAGIC | `target_size` | `CURATION_TARGET_SIZE` | number of rows of the curated set |
# MAGIC | `multiplier` | `CURATION_MULTIPLIER` | max copies of one point (1 = each point at most once) |
# MAGIC | `strategy` | `CURATION_STRATEGY` | `r`: random points within a cluster, `c`: closest to the centroid first |
# MAGIC | `seed` | `CURATION_SEED` | sampling seed |
# MAGIC | `table` | `CURATION_TABLE` | name of the curated table (default `curated_<target>_<strategy>_m<multiplier>_s<seed>`) |
# MAGIC | `keep_columns` | `CURATION_KEEP_COLUMNS` | comma-separated input columns to carry over (e.g. `label,url`) |

# COMMAND ----------

# MAGIC %pip install --quiet --no-deps faiss-cpu /Volumes/main/default/libs/curation_spark-0.1.0-py3-none-any.whl

# COMMAND ----------

from curation_spark.notebook import default_run_path, on_databricks, param, show

ON_DATABRICKS = on_databricks()

run_path = param("run", "CURATION_RUN", default_run_path()).strip()
target_size = int(param("target_size", "CURATION_TARGET_SIZE", "1000"))
multiplier = int(param("multiplier", "CURATION_MULTIPLIER", "1"))
strategy = param("strategy", "CURATION_STRATEGY", "r", ["r", "c"]).strip()
seed = int(param("seed", "CURATION_SEED", "0"))
table_name = param("table", "CURATION_TABLE", "").strip() or f"curated_{target_size}_{strategy}_m{multiplier}_s{seed}"
keep_columns = [c.strip() for c in param("keep_columns", "CURATION_KEEP_COLUMNS", "").split(",") if c.strip()]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Sample

# COMMAND ----------

import curation_spark as cs

spark = cs.session()  # the notebook's session (Databricks, spark-submit); a local Delta session elsewhere

run = cs.open_run(run_path, spark=spark)
curated = run.sample(target_size, multiplier=multiplier, strategy=strategy, seed=seed, table=table_name,
                     keep_columns=keep_columns)
result = run.metadata.samples[table_name]
print(f"curated table: {result.path} ({result.rows:,} rows, target {target_size:,}, {result.seconds:.1f} s)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The curated table
# MAGIC `id` (the input's id), `copy` (0 .. multiplier-1) and `cluster_id` (its level-1 cluster), plus the
# MAGIC columns kept from the input.

# COMMAND ----------

from pyspark.sql import functions as F

show(curated)
per_cluster = curated.groupBy("cluster_id").count()
spread = per_cluster.agg(F.count("*").alias("clusters"), F.min("count").alias("min"),
                         F.max("count").alias("max")).first()
print(f"{spread['clusters']:,} level-1 clusters represented; rows per cluster {spread['min']} .. {spread['max']}")
if "label" in curated.columns:
    show(curated.groupBy("label").count().orderBy("label"))
