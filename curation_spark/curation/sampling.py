"""Hierarchical balanced sampling on Spark (docs/concepts.md, "Balanced sampling by water-filling").

Targets flow top-down: water-fill ``target_size`` over the top level's clusters (on the
driver: the top level is small), then each cluster's target over its children, level by
level (``applyInPandas`` per parent group, so no level is ever collected), down to
level 1. There, a cluster of ``s`` points with target ``t`` gives every point ``t // s``
copies and one more to ``t % s`` points chosen by a ``row_number()`` window: closest to
the centroid first (``c``) or by a seeded hash (``r``). Copies are produced with
``explode(sequence(...))``. Capacity is ``multiplier x flat_size``; when the whole pool is
smaller than the target every point is taken ``multiplier`` times, with a warning.

Small hierarchies (at most ``SamplingParams.in_process_max_points`` level-1 points, 1M by
default: the toy demo, small runs) are sampled in the driver instead
(:func:`curate_in_process`): the centroids tables and the level-1 assignments are
collected once, with ``xxhash64(point_id, seed)`` computed *by Spark* in the same job,
and the same water-filling calls (same generators, same order) and the same row ranking
pick the same copies, without the dozens of small Spark jobs of the grouped path.

Between the two, a hierarchy whose level 1 has at most
``SamplingParams.driver_targets_max_clusters`` clusters (1M) but more points than the
driver should hold gets its targets water-filled in the driver (O(K) numbers: the
centroids tables' sizes) and only the level-1 selection on Spark; the grouped path, one
``applyInPandas`` per level, is kept for level 1s of millions of clusters. All three give
the same rows.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from curation_spark.errors import ConfigError
from curation_spark.io.runfolder import RunFolder
from curation_spark.io.spark_api import describe_work
from curation_spark.io.tables import POINT_ID
from curation_spark.method.waterfill import seeded_rng, water_fill

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


#: Level-1 hierarchies up to this many points are sampled in the driver (see the module doc).
IN_PROCESS_MAX_POINTS = 1_000_000
#: Level-1 hierarchies up to this many clusters get their targets water-filled in the driver.
DRIVER_TARGETS_MAX_CLUSTERS = 1_000_000

#: Every level's ``cluster_id``, ``size``, ``flat_size`` (and ``parent_id`` below the top),
#: as :func:`centroid_sizes` returns them.
LevelSizes = dict[int, dict[str, np.ndarray]]


@dataclass(frozen=True)
class SamplingParams:
    target_size: int
    multiplier: int = 1
    strategy: str = "r"
    seed: int = 0
    #: Sample in the driver when level 1 holds at most this many points (0: always on Spark).
    in_process_max_points: int = IN_PROCESS_MAX_POINTS
    #: On Spark, water-fill the targets in the driver when level 1 has at most this many
    #: clusters (0: always the grouped path).
    driver_targets_max_clusters: int = DRIVER_TARGETS_MAX_CLUSTERS


def top_level_targets(run: RunFolder, level: int, params: SamplingParams) -> tuple[DataFrame, int]:
    """Water-fill the whole budget over the top level (collected: it is small)."""
    spark = run.spark
    rows = run.read_centroids(level).select("cluster_id", "flat_size").collect()
    rows.sort(key=lambda r: r["cluster_id"])
    ids = np.array([r["cluster_id"] for r in rows], dtype=np.int64)
    flat = np.array([r["flat_size"] for r in rows], dtype=np.int64)
    targets = top_targets(flat, level, params)
    frame = spark.createDataFrame([(int(i), int(t)) for i, t in zip(ids, targets, strict=True)],
                                  "cluster_id int, target long")
    return frame, int(targets.sum())


def child_targets(run: RunFolder, level: int, parent_targets: DataFrame, params: SamplingParams) -> DataFrame:
    """Water-fill every level-``level+1`` cluster's target over its children (level ``level``)."""
    import pandas as pd
    from pyspark.sql import functions as F

    children = run.read_centroids(level).select("cluster_id", "flat_size", "parent_id")
    missing = children.where(F.col("parent_id").isNull()).limit(1).count()
    if missing:
        raise ConfigError(f"--run: {run.centroids_path(level)} has clusters without parent_id; the run is incomplete")
    joined = (children.join(parent_targets.withColumnRenamed("cluster_id", "parent_id"), "parent_id", "left")
              .fillna(0, ["target"]))
    multiplier, seed = params.multiplier, params.seed

    def fill(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("cluster_id", kind="stable")
        parent = int(pdf["parent_id"].iloc[0])
        budget = int(pdf["target"].iloc[0])
        caps = pdf["flat_size"].to_numpy(dtype=np.int64) * multiplier
        targets = water_fill(caps, budget, seeded_rng(seed, level, parent))
        return pd.DataFrame({"cluster_id": pdf["cluster_id"].to_numpy(dtype=np.int32), "target": targets})

    return joined.groupBy("parent_id").applyInPandas(fill, "cluster_id int, target long")


def leaf_selection(run: RunFolder, leaf_targets: DataFrame, params: SamplingParams) -> DataFrame:
    """Per level-1 cluster: ``t // s`` copies of every point, one more for ``t % s`` points
    ranked by distance (``c``) or a seeded hash (``r``); returns ``id, copy, cluster_id``.
    ``leaf_targets``: ``cluster_id, target`` (and ``size``, else read from the centroids)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    assign = run.read_assignments(1)
    if "size" not in leaf_targets.columns:
        leaf_targets = leaf_targets.join(run.read_centroids(1).select("cluster_id", "size"), "cluster_id")
    per_cluster = leaf_targets.where(F.col("target") > 0).select(
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


def check_params(params: SamplingParams) -> None:
    if params.target_size is None:
        raise ConfigError("sampling.target_size: required (how many samples the curated set should hold)")
    if params.strategy not in ("c", "r"):
        raise ConfigError(f"sampling.strategy: unknown value {params.strategy!r} (choose c or r)")


def level1_points(run: RunFolder) -> int | None:
    """Points of level 1 as recorded in run.json (None if the run folder does not say)."""
    stats = run.level_stats(1)
    return stats.n_points if stats is not None else run.metadata.input.n_rows if run.metadata else None


def in_process_decision(run: RunFolder, params: SamplingParams) -> bool:
    """Whether :func:`curate` samples in the driver: level 1 is small enough to collect."""
    n = level1_points(run)
    return n is not None and 0 < n <= params.in_process_max_points


def curate(run: RunFolder, n_levels: int, params: SamplingParams,
           sizes: LevelSizes | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """Targets top-down, then the level-1 selection. Returns (selection, summary).

    In the driver (:func:`curate_in_process`) for small hierarchies, else as Spark jobs;
    all paths give the same rows. ``sizes``: every level's sizes when the caller holds
    them already (``update`` computes them before any table has them), else read."""
    check_params(params)
    if in_process_decision(run, params):
        return curate_in_process(run, n_levels, params, sizes)
    return curate_on_spark(run, n_levels, params, sizes)


def driver_targets_decision(run: RunFolder, params: SamplingParams, sizes: LevelSizes | None = None) -> bool:
    """Whether :func:`curate_on_spark` water-fills in the driver: level 1 has few enough clusters."""
    if sizes is not None:
        k: int | None = len(sizes[1]["cluster_id"])
    else:
        stats = run.level_stats(1)
        k = stats.n_clusters if stats is not None else None
    return k is not None and k <= params.driver_targets_max_clusters


def curate_on_spark(run: RunFolder, n_levels: int, params: SamplingParams,
                    sizes: LevelSizes | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """:func:`curate` as Spark jobs: the level-1 selection by windows, its targets from the
    driver (:func:`hierarchy_targets`, up to ``driver_targets_max_clusters`` level-1
    clusters) or ``applyInPandas`` per parent, level by level."""
    import pyarrow as pa

    check_params(params)
    spark = run.spark
    if driver_targets_decision(run, params, sizes):
        describe_work(spark, f"sampling · targets of {n_levels} level(s) (driver)")
        leaf, total = hierarchy_targets(run, n_levels, params, sizes)
        keep = leaf["target"] > 0
        targets = spark.createDataFrame(pa.table({
            "cluster_id": pa.array(leaf["cluster_id"][keep], pa.int32()),
            "size": pa.array(leaf["size"][keep], pa.int64()),
            "target": pa.array(leaf["target"][keep], pa.int64())}))
    else:
        describe_work(spark, f"sampling · level {n_levels} targets")
        targets, total = top_level_targets(run, n_levels, params)
        for level in range(n_levels - 1, 0, -1):
            describe_work(spark, f"sampling · level {level} targets")
            targets = child_targets(run, level, targets, params).localCheckpoint()
    describe_work(spark, "sampling · level-1 selection")
    selection = leaf_selection(run, targets, params)
    return selection, _summary(params, total)


def _summary(params: SamplingParams, total: int) -> dict[str, Any]:
    return {"target_size": params.target_size, "multiplier": params.multiplier, "strategy": params.strategy,
            "seed": params.seed, "expected_rows": total}


# --------------------------------------------------------------------------- in the driver


def centroid_sizes(run: RunFolder, n_levels: int) -> LevelSizes:
    """``cluster_id``, ``size``, ``flat_size`` and ``parent_id`` of every level's centroids
    table in one Spark job (a union), as int64 arrays ordered by ``cluster_id`` per level; a
    null ``parent_id`` below the top level is refused as in :func:`child_targets`."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    frames = [run.read_centroids(level).select(
        F.lit(level).alias("_level"), F.col("cluster_id").cast("long"), F.col("size").cast("long"),
        F.col("flat_size").cast("long"), F.col("parent_id").cast("long")) for level in range(1, n_levels + 1)]
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame)
    table = union.toArrow()
    table = table.take(pc.sort_indices(table, sort_keys=[("_level", "ascending"), ("cluster_id", "ascending")]))
    out = {}
    for level in range(1, n_levels + 1):
        part = table.filter(pc.equal(table.column("_level"), level))
        if level < n_levels and part.column("parent_id").null_count:
            raise ConfigError(f"--run: {run.centroids_path(level)} has clusters without parent_id; "
                              "the run is incomplete")
        out[level] = {c: part.column(c).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
                      for c in ("cluster_id", "size", "flat_size")}
        if level < n_levels:
            out[level]["parent_id"] = part.column("parent_id").to_numpy().astype(np.int64, copy=False)
    return out


def top_targets(flat_sizes: np.ndarray, level: int, params: SamplingParams) -> np.ndarray:
    """Water-fill the whole budget over the top level's clusters (ordered by ``cluster_id``),
    as :func:`top_level_targets` does: capacities ``multiplier x flat_size``, generator
    ``seeded_rng(seed, level)``; warns when the budget exceeds the capacity."""
    flat = np.asarray(flat_sizes, dtype=np.int64)
    capacity = int(flat.sum()) * params.multiplier
    if params.target_size > capacity:
        log.warning("sampling.target_size=%d exceeds the capacity %d (= multiplier %d x %d points): "
                    "returning every point %d time(s)", params.target_size, capacity, params.multiplier,
                    int(flat.sum()), params.multiplier)
    return water_fill(flat * params.multiplier, params.target_size, seeded_rng(params.seed, level))


def hierarchy_targets(run: RunFolder, n_levels: int, params: SamplingParams,
                      sizes: LevelSizes | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Water-fill ``target_size`` top-down in the driver, exactly as
    :func:`top_level_targets` and :func:`child_targets` do: the same capacities, the same
    sibling order (``cluster_id``) and the same generators (``seeded_rng(seed, level)`` at
    the top, ``seeded_rng(seed, level, parent)`` below). Returns level 1's ``cluster_id``,
    ``size`` and ``target`` (ordered by ``cluster_id``) and the total. ``sizes``: the
    centroids tables' sizes if the caller holds them (else read)."""
    tables = sizes if sizes is not None else centroid_sizes(run, n_levels)
    top = tables[n_levels]
    targets = top_targets(top["flat_size"], n_levels, params)
    total = int(targets.sum())
    parent_ids, parent_targets, current = top["cluster_id"], targets, top
    for level in range(n_levels - 1, 0, -1):
        current = tables[level]
        parents = current["parent_id"]
        budget_of = dict(zip(parent_ids.tolist(), parent_targets.tolist(), strict=True))
        caps = current["flat_size"] * params.multiplier
        child_targets_ = np.zeros(len(parents), dtype=np.int64)
        order = np.argsort(parents, kind="stable")  # rows are in cluster_id order: stays so per parent
        groups, starts = np.unique(parents[order], return_index=True)
        bounds = np.r_[starts, len(order)]
        for j, parent in enumerate(groups.tolist()):
            rows = order[bounds[j]:bounds[j + 1]]
            child_targets_[rows] = water_fill(caps[rows], int(budget_of.get(parent, 0)),
                                              seeded_rng(params.seed, level, parent))
        parent_ids, parent_targets = current["cluster_id"], child_targets_
    return {"cluster_id": parent_ids, "size": current["size"], "target": parent_targets}, total


def leaf_rows(labels: np.ndarray, key: np.ndarray, point_ids: np.ndarray | pa.Array, cluster_ids: np.ndarray,
              sizes: np.ndarray, targets: np.ndarray, multiplier: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level-1 selection of :func:`leaf_selection` on arrays (one entry per level-1 point).

    Points are ranked inside their cluster by ``key`` (the distance for ``c``, Spark's
    ``xxhash64(point_id, seed)`` for ``r``), then ``point_id`` (Arrow's sort: the order
    Spark's window uses, for numbers and strings); a point of a cluster with target
    ``t > 0`` and size ``s`` (``cluster_ids``/``sizes``/``targets``, from the centroids
    table) gets ``t // s`` copies, one more if its 1-based rank is ``<= t - (t // s) s``,
    at most ``multiplier`` (``t // s`` is Spark's ``cast(t / s as long)``).

    Returns (row positions into the inputs, copy index, cluster id), one entry per copy.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ranked = pa.table({"c": pa.array(np.asarray(labels, dtype=np.int64)), "k": pa.array(np.asarray(key)),
                       "p": point_ids if isinstance(point_ids, (pa.Array, pa.ChunkedArray)) else pa.array(point_ids)})
    order = pc.sort_indices(ranked, sort_keys=[("c", "ascending"), ("k", "ascending"), ("p", "ascending")]).to_numpy()
    lab = np.asarray(labels, dtype=np.int64)[order]
    n = len(lab)
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if n else np.zeros(0, np.int64)
    ranks = np.arange(1, n + 1) - np.repeat(starts, np.diff(np.r_[starts, n]))  # row_number() per cluster
    t = np.zeros(n, dtype=np.int64)
    s = np.ones(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    if len(cluster_ids):
        pos = np.minimum(np.searchsorted(cluster_ids, lab), len(cluster_ids) - 1)
        known = cluster_ids[pos] == lab
        t[known], s[known] = targets[pos[known]], sizes[pos[known]]
    ok = known & (t > 0)
    full = np.zeros(n, dtype=np.int64)
    full[ok] = (t[ok].astype(np.float64) / s[ok]).astype(np.int64)  # double division, truncated: as Spark
    copies = np.where(ok, np.minimum(full + (ranks <= t - full * s), multiplier), 0)
    chosen = np.flatnonzero(copies > 0)
    per = copies[chosen]
    rows = np.repeat(order[chosen], per)
    copy = np.arange(len(rows)) - np.repeat(np.cumsum(per) - per, per)
    return rows, copy.astype(np.int32), np.repeat(lab[chosen], per).astype(np.int32)


def curate_in_process(run: RunFolder, n_levels: int, params: SamplingParams,
                      sizes: LevelSizes | None = None) -> tuple[DataFrame, dict[str, Any]]:
    """:func:`curate` in the driver, for hierarchies whose level 1 fits comfortably.

    Spark computes what the Spark path's windows order by (``distance``, or
    ``xxhash64(point_id, seed)``) when the level-1 assignments are collected; the targets
    (:func:`hierarchy_targets`) and the copies (:func:`leaf_rows`) are computed in the
    driver. The selection is a driver-built frame with the Spark path's columns and types
    (``id``, ``copy``, ``cluster_id``).
    """
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, StructField, StructType

    check_params(params)
    spark = run.spark
    describe_work(spark, f"sampling · targets of {n_levels} level(s) (in-process)")
    leaf, total = hierarchy_targets(run, n_levels, params, sizes)
    describe_work(spark, "sampling · level-1 selection (in-process)")
    assign = run.read_assignments(1)
    id_type = assign.schema[POINT_ID].dataType
    key = F.col("distance") if params.strategy == "c" else F.xxhash64(F.col(POINT_ID), F.lit(params.seed))
    table = assign.select(POINT_ID, F.col("cluster_id").cast("int").alias("cluster_id"), key.alias("_key")).toArrow()
    ids = table.column(POINT_ID).combine_chunks()
    rows, copy, cluster = leaf_rows(table.column("cluster_id").to_numpy(), table.column("_key").to_numpy(), ids,
                                    leaf["cluster_id"], leaf["size"], leaf["target"], params.multiplier)
    out = pa.table({"id": ids.take(pa.array(rows, pa.int64())), "copy": pa.array(copy, pa.int32()),
                    "cluster_id": pa.array(cluster, pa.int32())})
    schema = StructType([StructField("id", id_type, True), StructField("copy", IntegerType(), False),
                         StructField("cluster_id", IntegerType(), True)])
    return spark.createDataFrame(out, schema=schema), _summary(params, total)


def with_input_columns(selection: DataFrame, input_df: DataFrame, id_col: str,
                       keep_columns: Sequence[str]) -> DataFrame:
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
