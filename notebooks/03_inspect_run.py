# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Inspect a run
# MAGIC
# MAGIC What a run folder holds: per-level statistics from `run.json`, the level tables, the curated tables
# MAGIC sampled so far, and figures (the HTML report of `curation_spark.report` where the package has it,
# MAGIC else simple matplotlib plots of the cluster sizes and the k-means objective).
# MAGIC
# MAGIC | widget | environment variable | meaning |
# MAGIC |---|---|---|
# MAGIC | `run` | `CURATION_RUN` | run folder |
# MAGIC | `table` | `CURATION_TABLE` | curated table to describe (default: the last one written) |
# MAGIC | `report_dir` | `CURATION_REPORT_DIR` | local folder for the report / figures (default `<run>/report`, or `./report_<run>` for remote runs) |

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

figures = []
try:
    from curation_spark.report import write_report
except ImportError:  # an older package without the report module: plain matplotlib
    write_report = None

if write_report is not None:
    report_path = write_report(run.path, out_dir=report_dir, table=table, spark=spark)
    figures = sorted(os.path.join(os.path.dirname(report_path), f)
                     for f in os.listdir(os.path.dirname(report_path)) if f.endswith(".png"))
    print(f"report: {report_path} ({len(figures)} figures)")
    try:
        displayHTML(open(report_path, encoding="utf-8").read())  # noqa: F821 -- Databricks
    except NameError:
        pass
else:
    import matplotlib

    if not ON_DATABRICKS:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

# COMMAND ----------

if write_report is None:
    local_run = run.path[len("file:"):] if run.path.startswith("file:") else run.path
    out = report_dir or (os.path.join(local_run, "report") if "://" not in local_run and not local_run.startswith(
        "dbfs:") else f"report_{os.path.basename(local_run.rstrip('/'))}")
    os.makedirs(out, exist_ok=True)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lv, tables in level_tables.items():
        sizes = tables["centroids"].select("size").toPandas()["size"].sort_values(ascending=False).to_numpy()
        axes[0].plot(range(1, len(sizes) + 1), sizes, marker=".", label=f"level {lv}")
        history = run.levels[lv - 1].kmeans_history
        axes[1].plot([h["iteration"] for h in history], [h["objective"] for h in history], marker=".",
                     label=f"level {lv}")
    axes[0].set(title="Cluster sizes (sorted)", xlabel="rank", ylabel="points", yscale="log")
    axes[1].set(title="k-means objective", xlabel="iteration", ylabel="objective", yscale="log")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "levels.png")
    fig.savefig(path, dpi=100)
    figures.append(path)

    if len(samples):
        name = table or samples["table"].iloc[-1]
        curated = run.curated(name)
        per_cluster = curated.groupBy("cluster_id").count().toPandas()["count"].sort_values(ascending=False)
        fig2, ax = plt.subplots(figsize=(6, 4))
        ax.bar(range(len(per_cluster)), per_cluster.to_numpy())
        ax.set(title=f"{name}: rows per level-1 cluster", xlabel="cluster (sorted)", ylabel="rows")
        fig2.tight_layout()
        path = os.path.join(out, "curated_per_cluster.png")
        fig2.savefig(path, dpi=100)
        figures.append(path)
    if ON_DATABRICKS:
        plt.show()
    print("figures:", ", ".join(figures))
