"""Hierarchical balanced sampling on Spark (DESIGN.md section 1, second half).

Targets flow top-down: water-fill ``target_size`` over the top level's clusters (on the
driver: the top level is small), then each cluster's target over its children, level by
level (``applyInPandas`` per parent group, so no level is ever collected), down to
level 1. There, a cluster of ``s`` points with target ``t`` gives every point ``t // s``
copies and one more to ``t % s`` points chosen by a ``row_number()`` window: closest to
the centroid first (``c``) or by a seeded hash (``r``). Copies are produced with
``explode(sequence(...))``. Capacity is ``multiplier x flat_size``; when the whole pool is
smaller than the target every point is taken ``multiplier`` times, with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from curation_spark.errors import ConfigError
from curation_spark.runfolder import RunFolder
from curation_spark.tables import POINT_ID, read_table
from curation_spark.waterfill import seeded_rng, water_fill

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    target_size: int
    multiplier: int = 1
    strategy: str = "r"
    seed: int = 0


def top_level_targets(run: RunFolder, level: int, params: SamplingParams) -> tuple["DataFrame", int]:
    """Water-fill the whole budget over the top level (collected: it is small)."""
    spark = run.spark
    rows = read_table(spark, run.centroids_path(level), run.format).select("cluster_id", "flat_size").collect()
    rows.sort(key=lambda r: r["cluster_id"])
    ids = np.array([r["cluster_id"] for r in rows], dtype=np.int64)
    flat = np.array([r["flat_size"] for r in rows], dtype=np.int64)
    capacity = int(flat.sum()) * params.multiplier
    if params.target_size > capacity:
        log.warning("sampling.target_size=%d exceeds the capacity %d (= multiplier %d x %d points): "
                    "returning every point %d time(s)", params.target_size, capacity, params.multiplier,
                    int(flat.sum()), params.multiplier)
    targets = water_fill(flat * params.multiplier, params.target_size, seeded_rng(params.seed, level))
    frame = spark.createDataFrame([(int(i), int(t)) for i, t in zip(ids, targets)], "cluster_id int, target long")
    return frame, int(targets.sum())


def child_targets(run: RunFolder, level: int, parent_targets: "DataFrame", params: SamplingParams) -> "DataFrame":
    """Water-fill every level-``level+1`` cluster's target over its children (level ``level``)."""
    import pandas as pd
    from pyspark.sql import functions as F

    spark = run.spark
    children = read_table(spark, run.centroids_path(level), run.format).select("cluster_id", "flat_size", "parent_id")
    missing = children.where(F.col("parent_id").isNull()).limit(1).count()
    if missing:
        raise ConfigError(f"--run: {run.centroids_path(level)} has clusters without parent_id; the run is incomplete")
    joined = children.join(parent_targets.withColumnRenamed("cluster_id", "parent_id"), "parent_id", "left").fillna(0, ["target"])
    multiplier, seed = params.multiplier, params.seed

    def fill(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("cluster_id", kind="stable")
        parent = int(pdf["parent_id"].iloc[0])
        budget = int(pdf["target"].iloc[0])
        caps = pdf["flat_size"].to_numpy(dtype=np.int64) * multiplier
        targets = water_fill(caps, budget, seeded_rng(seed, level, parent))
        return pd.DataFrame({"cluster_id": pdf["cluster_id"].to_numpy(dtype=np.int32), "target": targets})

    return joined.groupBy("parent_id").applyInPandas(fill, "cluster_id int, target long")


def leaf_selection(run: RunFolder, leaf_targets: "DataFrame", params: SamplingParams) -> "DataFrame":
    """Per level-1 cluster: ``t // s`` copies of every point, one more for ``t % s`` points
    ranked by distance (``c``) or a seeded hash (``r``); returns ``id, copy, cluster_id``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spark = run.spark
    assign = read_table(spark, run.assignments_path(1), run.format)
    sizes = read_table(spark, run.centroids_path(1), run.format).select("cluster_id", "size")
    per_cluster = leaf_targets.join(sizes, "cluster_id").where(F.col("target") > 0).select(
        "cluster_id",
        (F.col("target") / F.col("size")).cast("long").alias("_full"),
        (F.col("target") - (F.col("target") / F.col("size")).cast("long") * F.col("size")).alias("_rem"),
    )
    if params.strategy == "c":
        order = [F.col("distance").asc(), F.col(POINT_ID).asc()]
    else:
        order = [F.xxhash64(F.col(POINT_ID), F.lit(params.seed)).asc(), F.col(POINT_ID).asc()]
    ranked = assign.join(per_cluster, "cluster_id").withColumn(
        "_rank", F.row_number().over(Window.partitionBy("cluster_id").orderBy(*order)))
    copies = (F.col("_full") + F.when(F.col("_rank") <= F.col("_rem"), 1).otherwise(0)).cast("int")
    with_copies = ranked.withColumn("_copies", F.least(copies, F.lit(params.multiplier))).where(F.col("_copies") > 0)
    return with_copies.select(
        F.col(POINT_ID).alias("id"),
        F.explode(F.sequence(F.lit(0), F.col("_copies") - 1)).alias("copy"),
        F.col("cluster_id").cast("int").alias("cluster_id"),
    )


def curate(run: RunFolder, n_levels: int, params: SamplingParams) -> tuple["DataFrame", dict[str, Any]]:
    """Targets top-down, then the level-1 selection. Returns (selection, summary)."""
    if params.target_size is None:
        raise ConfigError("sampling.target_size: required (how many samples the curated set should hold)")
    if params.strategy not in ("c", "r"):
        raise ConfigError(f"sampling.strategy: unknown value {params.strategy!r} (choose c or r)")
    spark = run.spark
    spark.sparkContext.setJobDescription(f"sampling · level {n_levels} targets")
    targets, total = top_level_targets(run, n_levels, params)
    for level in range(n_levels - 1, 0, -1):
        spark.sparkContext.setJobDescription(f"sampling · level {level} targets")
        targets = child_targets(run, level, targets, params).localCheckpoint()
    spark.sparkContext.setJobDescription("sampling · level-1 selection")
    selection = leaf_selection(run, targets, params)
    summary = {"target_size": params.target_size, "multiplier": params.multiplier, "strategy": params.strategy,
               "seed": params.seed, "expected_rows": total}
    return selection, summary


def with_input_columns(selection: "DataFrame", input_df: "DataFrame", id_col: str, keep_columns: Sequence[str]) -> "DataFrame":
    """Join requested input columns back onto the selection by id."""
    from pyspark.sql import functions as F

    if not keep_columns:
        return selection
    missing = [c for c in keep_columns if c not in input_df.columns]
    if missing:
        raise ConfigError(f"sampling.keep_columns: column {missing[0]!r} is not in the input table "
                          f"(columns: {', '.join(input_df.columns)})")
    cols = [c for c in keep_columns if c != id_col]
    extra = input_df.select(F.col(id_col).alias("id"), *cols)
    return selection.join(extra, "id", "left").select("id", "copy", "cluster_id", *cols)
