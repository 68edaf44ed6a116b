# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Update a run with the input's new rows
# MAGIC
# MAGIC For an input table that grows every day: the rows added since the run (or its last update) are
# MAGIC assigned to their nearest level-1 centroid, rows deleted from the input are dropped, every level's
# MAGIC sizes are updated and the curated tables are sampled again with their own settings. No centroid
# MAGIC moves and old rows keep their clusters; the drift line says when a full re-cluster (`01_cluster`
# MAGIC with `overwrite`) is due. A Delta input with the change data feed on is read incrementally.
# MAGIC
# MAGIC Use the same settings as the `01_cluster` run (the run folder is tied to its config):
# MAGIC
# MAGIC | widget | environment variable (outside Databricks) | meaning |
# MAGIC |---|---|---|
# MAGIC | `input_path` | `CURATION_INPUT` | Delta or Parquet folder with the embeddings |
# MAGIC | `input_table` | `CURATION_INPUT_TABLE` | ... or a catalog table (`catalog.schema.table`) |
# MAGIC | `run` | `CURATION_RUN` | the run folder to update |
# MAGIC | `config` | `CURATION_CONFIG` | optional YAML config file |
# MAGIC | `overrides` | `CURATION_OVERRIDES` | `key=value` settings separated by `;` (as for `01_cluster`) |

# COMMAND ----------

# MAGIC %pip install --quiet --no-deps faiss-cpu /Volumes/main/default/libs/curation_spark-0.1.0-py3-none-any.whl

# COMMAND ----------

from curation_spark.notebook import on_databricks, run_config_params, show

ON_DATABRICKS = on_databricks()
params = run_config_params()  # the same widgets as 01_cluster -> a validated config
config, run_path = params["config"], params["run_path"]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Update
# MAGIC Atomic: an interrupted update leaves the run as it was (or is finished by running this again).

# COMMAND ----------

import curation_spark as cs

spark = cs.session()  # the notebook's session (Databricks, spark-submit); a local Delta session elsewhere

result = cs.open_run(run_path, spark=spark).update(config)  # (the widgets' config: the run's own, checked)
print(result.message)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The run's updates so far
# MAGIC One row per update: input versions, rows added / deleted, how the changes were found, drift
# MAGIC (share of new rows beyond the fit's 99th-percentile distance; about 1 % without drift).

# COMMAND ----------

import pandas as pd

history = pd.DataFrame([{
    "from version": u.from_version, "to version": u.to_version, "method": u.method, "rows read": u.rows_read,
    "added": u.rows_added, "deleted": u.rows_deleted, "rewritten": u.rows_changed, "points": u.n_points,
    "beyond p99": round(u.drift.share_beyond_p99, 4) if u.drift else None,
    "re-cluster due": u.drift.recluster_due if u.drift else None, "seconds": u.seconds,
} for u in cs.open_run(run_path, spark=spark).metadata.updates])
show(history)
