"""Hierarchical k-means with resampling and splitting (Vo et al., 2024; docs/concepts.md).

Level 1 clusters the points; level l > 1 clusters the centroids of level l-1 (read back
from their table, never collected). Per level:

1. k-means with ``n_clusters[l]`` (more clusters than points is refused before any work,
   or clamped to the points with a warning under ``clustering.clamp_n_clusters``);
2. ``n_resampling_steps[l]`` resampling steps where ``sample_size[l] > 1``: take
   ``sample_size`` points per cluster (closest to the centroid, or seeded-random) with a
   ``row_number()`` window, run a fresh k-means with the same K on that sample only,
   reassign all of the level's points to the new centroids;
3. if ``n_splits[l] > 1``: split every cluster by its own small k-means
   (``applyInPandas`` per cluster); non-empty sub-clusters become the level's clusters
   with fresh dense ids.

A level whose embeddings fit in ``clustering.in_process_max_mb`` (upper levels, toy data)
is collected once and clustered in the driver by :mod:`curation_spark.method.inprocess`, with the
same seeds and rules; larger levels run as Spark jobs (``kmeans.fit`` barrier stages,
windows, ``applyInPandas``). Both paths write the same tables and run.json statistics.

Each level is written as two tables before the next starts, and ``run.json`` marks it
complete, so an interrupted run resumes after its last completed level.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from curation_spark.config import resolve_sample_size
from curation_spark.curation import drift
from curation_spark.engine import kmeans, stage_resampling
from curation_spark.errors import ConfigError
from curation_spark.io.blocks import batches_to_block, float_matrix_to_list_array
from curation_spark.io.progress import IterationProgress
from curation_spark.io.run_metadata import LevelStats
from curation_spark.io.runfolder import RunFolder
from curation_spark.io.spark_api import describe_work
from curation_spark.io.tables import EMBEDDING, POINT_ID, merge_into, read_table, write_table
from curation_spark.method import inprocess, kernels, lloyd, seeds
from curation_spark.method.inprocess import LevelPlan
from curation_spark.method.lloyd import KMeansParams

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from curation_spark.config import ClusteringConfig

log = logging.getLogger(__name__)


def level_points(run: RunFolder, level: int, base_points: DataFrame) -> DataFrame:
    """The points level ``level`` clusters: the input (level 1) or level l-1's centroids.

    Read from the written table on purpose, not kept from the level before: that frame's
    lineage is the whole previous k-means (Spark would recompute it), the table is the
    state a resume starts from, and it is small (K x D)."""
    if level == 1:
        return base_points
    return centroid_points(run, level - 1)


def centroid_points(run: RunFolder, level: int) -> DataFrame:
    """Level ``level``'s centroids as a ``point_id, embedding`` frame (``point_id`` = the
    cluster id): what level ``level + 1`` clusters and what ``update`` assigns to."""
    from pyspark.sql import functions as F

    return run.read_centroids(level).select(F.col("cluster_id").cast("long").alias(POINT_ID),
                                            F.col("centroid").alias(EMBEDDING))


def level_clusters(cfg: ClusteringConfig, level: int, n_points: int) -> int:
    """The level's K: ``n_clusters[level]``, refused with one line when the level has
    fewer points (k-means would make one cluster per point and take long over it) unless
    ``clustering.clamp_n_clusters`` asks for exactly that."""
    requested = cfg.n_clusters[level - 1]
    if requested > n_points and not cfg.clamp_n_clusters:
        what = "the input has" if level == 1 else f"level {level - 1} made"
        raise ConfigError(f"clustering.n_clusters: level {level} asks for {requested} clusters but {what} only "
                          f"{n_points} {'rows' if level == 1 else 'clusters'} to cluster; lower n_clusters, or set "
                          "clustering.clamp_n_clusters=true to use one cluster per point")
    return lloyd.clamp_clusters(requested, n_points, f"level {level}")


def with_sample_size(cfg: ClusteringConfig, level: int, n_points: int, k: int) -> ClusteringConfig:
    """``cfg`` with the level's ``sample_size`` resolved (``None``: half its mean cluster
    size, :func:`config.resolve_sample_size`), logged when derived."""
    i = level - 1
    requested = cfg.sample_size[i]
    size = resolve_sample_size(requested, n_points, k)
    if requested is None:
        steps = cfg.n_resampling_steps[i]
        log.info("level %d: sample_size %d (half the mean cluster size %.1f)%s", level, size, n_points / k,
                 "" if size > 1 or steps == 0 else "; no resampling, which needs sample_size > 1")
    sizes = list(cfg.sample_size)
    sizes[i] = size
    return dataclasses.replace(cfg, sample_size=tuple(sizes))


def level_params(cfg: ClusteringConfig, level: int, k: int, seed_offset: int = 0) -> KMeansParams:
    i = level - 1
    return KMeansParams(
        n_clusters=k,
        n_iters=cfg.n_iters[i],
        distance=cfg.distance,
        init=cfg.init,
        seed=seeds.derive_seed(cfg.seed, seeds.KMEANS, level, seed_offset),
        tol=cfg.tol,
        init_sample_size=cfg.init_sample_size,
        engine=cfg.engine,
        num_partitions=cfg.num_partitions,
        assignment=cfg.assignment,
        index_min_clusters=cfg.index_min_clusters,
        index_neighbours=cfg.index_neighbours,
        index_probes=cfg.index_probes,
    )


def resampling_sample(points: DataFrame, assignments: DataFrame, sample_size: int, strategy: str,
                      seed: int) -> DataFrame:
    """``sample_size`` points per cluster via ``row_number()``: closest first (``c``) or by a
    seeded hash of the id (``r``, independent of partitioning)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if strategy == "c":
        order = [F.col("distance").asc(), F.col(POINT_ID).asc()]
    else:
        order = [F.xxhash64(F.col(POINT_ID), F.lit(seed)).asc(), F.col(POINT_ID).asc()]
    window = Window.partitionBy("cluster_id").orderBy(*order)
    chosen = (assignments.withColumn("_rank", F.row_number().over(window))
              .where(F.col("_rank") <= sample_size).select(POINT_ID))
    return points.join(chosen, POINT_ID, "inner").select(POINT_ID, EMBEDDING)


def split_clusters(points: DataFrame, assignments: DataFrame, n_splits: int, n_iters: int, seed: int,
                   distance: str) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Split each cluster into at most ``n_splits`` sub-clusters in parallel (``applyInPandas``).

    Returns (assignments, centroids, cached) with fresh dense cluster ids: a cluster's
    sub-clusters get consecutive ids, ordered by parent cluster id then sub-cluster index.
    ``cached`` is the persisted per-cluster output both frames read from (the splits run
    once); unpersist it once they are materialised or written.
    """
    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StringType, StructField, StructType

    id_type = points.schema[POINT_ID].dataType
    schema = StructType([
        StructField("kind", StringType(), False),
        StructField("parent", IntegerType(), False),
        StructField("sub", IntegerType(), False),
        StructField(POINT_ID, id_type, True),
        StructField("distance", FloatType(), True),
        StructField("centroid", ArrayType(FloatType()), True),
        StructField("size", LongType(), True),
    ])

    def split_group(pdf: pd.DataFrame) -> pd.DataFrame:
        parent = int(pdf["cluster_id"].iloc[0])
        pdf = pdf.sort_values(POINT_ID, kind="stable")
        x = np.stack(pdf[EMBEDDING].to_numpy()).astype(np.float32)  # type: ignore[call-overload]  # an array of rows
        labels, dist, cents = kernels.split_cluster(x, n_splits, n_iters, seeds.for_parent(seed, parent), distance)
        counts = np.bincount(labels, minlength=len(cents))
        rows_a = pd.DataFrame({"kind": "a", "parent": parent, "sub": labels.astype(np.int32),
                               POINT_ID: pdf[POINT_ID].to_numpy(), "distance": dist.astype(np.float32),
                               "centroid": None, "size": None})
        rows_c = pd.DataFrame({"kind": "c", "parent": parent, "sub": np.arange(len(cents), dtype=np.int32),
                               POINT_ID: None, "distance": None, "centroid": list(cents), "size": counts})
        return pd.concat([rows_a, rows_c], ignore_index=True)

    joined = points.join(assignments.select(POINT_ID, "cluster_id"), POINT_ID)
    out = joined.groupBy("cluster_id").applyInPandas(split_group, schema).cache()
    subs = out.where(F.col("kind") == "c")
    # Dense ids: offset of each parent = number of sub-clusters of all smaller parents.
    per_parent = sorted((int(r["parent"]), int(r["n"]))
                        for r in subs.groupBy("parent").agg(F.count("*").alias("n")).collect())
    offsets, running = [], 0
    for parent, n in per_parent:
        offsets.append((parent, running))
        running += n
    spark = points.sparkSession
    offsets_df = F.broadcast(spark.createDataFrame(offsets, "parent int, offset int"))
    new_assign = (out.where(F.col("kind") == "a").join(offsets_df, "parent")
                  .select(POINT_ID, (F.col("offset") + F.col("sub")).cast("int").alias("cluster_id"), "distance"))
    new_cents = (subs.join(offsets_df, "parent")
                 .select((F.col("offset") + F.col("sub")).cast("int").alias("cluster_id"), "centroid", "size"))
    return new_assign, new_cents, out


def centroids_frame(spark, centroids: np.ndarray, sizes: np.ndarray) -> DataFrame:
    """A driver-side (K x D) centroid array as a ``cluster_id, centroid, size`` frame."""
    import pyarrow as pa

    table = pa.table({
        "cluster_id": pa.array(np.arange(len(centroids), dtype=np.int32)),
        "centroid": float_matrix_to_list_array(centroids),
        "size": pa.array(sizes.astype(np.int64)),
    })
    return spark.createDataFrame(table)


def resampling_seed(cfg: ClusteringConfig, level: int, step: int) -> int:
    """Seed of resampling step ``step``'s ``r`` order (both paths)."""
    return seeds.derive_seed(cfg.seed, seeds.RESAMPLING_ORDER, level, step)


def split_seed(cfg: ClusteringConfig, level: int) -> int:
    """Base seed of the level's splits; cluster ``p`` is split with
    ``seeds.for_parent(split_seed, p)`` (:func:`kernels.split_cluster`)."""
    return seeds.derive_seed(cfg.seed, seeds.SPLIT, level)


def n_resampling_steps(cfg: ClusteringConfig, level: int) -> int:
    """Resampling runs only where ``sample_size > 1`` (resolved: :func:`with_sample_size`)."""
    i = level - 1
    if cfg.sample_size[i] is None:
        raise ValueError(f"level {level}: sample_size is not resolved yet (hierarchy.with_sample_size)")
    return cfg.n_resampling_steps[i] if cfg.sample_size[i] > 1 else 0  # type: ignore[operator]  # not None: checked above


def in_process_decision(cfg: ClusteringConfig, n_points: int, dim: int) -> tuple[bool, str]:
    """Whether the level runs in the driver (numpy/faiss) rather than as Spark jobs, and why.

    In-process when its float32 embeddings take at most ``clustering.in_process_max_mb``
    (0 disables): below that, Spark's per-job overhead dominates the arithmetic.
    """
    mb = n_points * dim * 4 / 2 ** 20
    if cfg.in_process_max_mb == 0:
        return False, "clustering.in_process_max_mb=0 disables the in-process path"
    if n_points * dim * 4 <= cfg.in_process_max_mb * 2 ** 20:
        return True, f"{mb:.1f} MB of embeddings <= clustering.in_process_max_mb={cfg.in_process_max_mb}"
    return False, f"{mb:.1f} MB of embeddings > clustering.in_process_max_mb={cfg.in_process_max_mb}"


def level_plan(cfg: ClusteringConfig, level: int, k: int, n_points: int | None = None) -> LevelPlan:
    """The in-process plan of a level: the same k-means parameters and seeds as the Spark
    path. ``n_points``: the level's points, to resolve a default ``sample_size``."""
    if n_points is not None:
        cfg = with_sample_size(cfg, level, n_points, k)
    i = level - 1
    steps = n_resampling_steps(cfg, level)
    return LevelPlan(
        level=level,
        kmeans_params=tuple(level_params(cfg, level, k, seed_offset=step) for step in range(steps + 1)),
        sample_size=cfg.sample_size[i],  # type: ignore[arg-type]  # resolved: with_sample_size
        strategy=cfg.sampling_strategy[i],
        resampling_seeds=tuple(resampling_seed(cfg, level, step) for step in range(1, steps + 1)),
        n_splits=cfg.n_splits[i],
        split_iters=cfg.n_iters[i],
        split_seed=split_seed(cfg, level),
    )


@dataclass
class _LevelTables:
    """A clustered level before writing: its assignments and ``cluster_id, centroid, size``
    frames, final sizes/objective, statistics so far, and the caches to release after."""

    assignments: DataFrame
    centroids: DataFrame
    sizes: np.ndarray
    objective: float
    info: LevelStats
    #: DataFrames or k-means results: anything whose ``unpersist()`` frees a cache.
    cached: list[Any] = field(default_factory=list)
    #: Every point's distance to its centroid when the driver holds them (in-process).
    distances: np.ndarray | None = None

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()


def _level_info(cfg: ClusteringConfig, level: int, n_points: int, k: int, engine: str,
                history: list[dict[str, Any]], objective: float, sizes: np.ndarray) -> LevelStats:
    """The statistics both paths record for a level's k-means (run.json ``levels.<l>``)."""
    return LevelStats(
        level=level, n_points=n_points, n_clusters_requested=cfg.n_clusters[level - 1], n_clusters=k,
        engine=engine, kmeans_history=history, objective_kmeans=objective,
        sizes_kmeans=kernels.size_stats(sizes), sizes_kmeans_histogram=kernels.size_histogram(sizes),
    )


def level_one_checks_input(spark, cfg: ClusteringConfig, n_points: int, dim: int) -> bool:
    """Whether level 1 runs on Spark with a k-means that reads the input first in its
    barrier stage: then the input checks are counted while its blocks load
    (``kmeans.fit(input_check=...)``) and the validation pass over the table is skipped."""
    in_process, _ = in_process_decision(cfg, n_points, dim)
    k = min(cfg.n_clusters[0], n_points)
    return not in_process and kmeans.validates_while_loading(spark, level_params(cfg, 1, k))


def run_level(run: RunFolder, cfg: ClusteringConfig, level: int, points: DataFrame, n_points: int,
              dim: int | None = None, input_check: kmeans.InputCheck | None = None) -> LevelStats:
    """Cluster one level (in the driver if small, else on Spark) and write its two tables;
    returns the level's statistics. ``dim``: the embedding dimension if known (saves a job);
    ``input_check``: count the input checks while the level's k-means loads (level 1, see
    :func:`level_one_checks_input`)."""
    stage = f"level {level}"
    started = time.perf_counter()
    k = level_clusters(cfg, level, n_points)
    cfg = with_sample_size(cfg, level, n_points, k)
    dim = dim or kmeans.embedding_dim(points)
    in_process, why = in_process_decision(cfg, n_points, dim)
    log.info("%s: %s (%s)", stage, "in-process (numpy/faiss in the driver)" if in_process else "on Spark", why)
    if in_process:
        level_tables = _level_in_process(cfg, level, points, n_points, k, dim, stage)
    else:
        level_tables = _level_on_spark(cfg, level, points, n_points, k, dim, stage, input_check)
    try:
        _write_level(run, level, level_tables.assignments, level_tables.centroids)
    finally:
        level_tables.release()
    if level > 1:
        fill_parents(run, level)
    else:  # what every later `update` compares its new rows with (see curation.drift)
        assert run.metadata is not None
        describe_work(run.spark, "level 1 · drift baseline")
        run.metadata.drift_baseline = (drift.baseline_of_distances(level_tables.distances)
                                       if level_tables.distances is not None
                                       else drift.baseline_of_assignments(run.read_assignments(1)))
    sizes, objective, info = level_tables.sizes, level_tables.objective, level_tables.info
    stats = kernels.size_stats(sizes)
    info.n_clusters, info.objective, info.sizes = int(len(sizes)), objective, stats
    info.sizes_histogram = kernels.size_histogram(sizes)
    info.degenerate = bool(len(sizes) > 1 and stats["largest_share"] > cfg.degenerate_share)
    info.sample_size = cfg.sample_size[level - 1]
    info.seconds = time.perf_counter() - started
    if info.degenerate:
        log.warning("%s is degenerate: its largest cluster holds %.0f %% of its %d points (more than "
                    "clustering.degenerate_share = %.2f); for L2-normalised embeddings try clustering.distance: "
                    "cosine, or fewer clusters at this level", stage, 100 * stats["largest_share"], int(sizes.sum()),
                    cfg.degenerate_share)
    log.info("%s done: %d clusters, objective %.6g, sizes min/median/max %s/%s/%s, gini %.3f, %.1f s", stage,
             info.n_clusters, objective, stats["min"], stats["median"], stats["max"], stats["gini"], info.seconds)
    return info


def collect_level(points: DataFrame, dim: int,
                  seeds: list[int]) -> tuple[pa.Array, np.ndarray, dict[int, np.ndarray]]:
    """The level's points in the driver, in ascending id order, with ``xxhash64(point_id,
    seed)`` for every seed: one Spark job, one Arrow transfer. Spark computes the keys, so
    the in-process row choices are Spark's (see :mod:`curation_spark.method.inprocess`)."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    key_cols = [F.xxhash64(F.col(POINT_ID), F.lit(seed)).alias(f"_key{j}") for j, seed in enumerate(seeds)]
    table = points.select(POINT_ID, EMBEDDING, *key_cols).toArrow()
    ids, x = batches_to_block(table.select([POINT_ID, EMBEDDING]).to_batches(), dim)  # sorted by id
    order = pc.sort_indices(table.column(POINT_ID))  # the same permutation, for the keys
    keys = {seed: table.column(f"_key{j}").take(order).to_numpy() for j, seed in enumerate(seeds)}
    return ids, x, keys


def _level_in_process(cfg: ClusteringConfig, level: int, points: DataFrame, n_points: int, k: int, dim: int,
                      stage: str) -> _LevelTables:
    """Collect the level once, cluster it with :func:`inprocess.cluster_level_in_memory`,
    and hand back driver-built frames with the Spark path's column types."""
    import pyarrow as pa

    spark = points.sparkSession
    t0 = time.perf_counter()
    plan = level_plan(cfg, level, k)
    describe_work(spark, f"{stage} · collect {n_points} points (in-process)")
    ids, x, keys = collect_level(points, dim, plan.hash_seeds(n_points, dim))
    log.info("%s: collected %d x %d points and %d hash key column(s) in %.1f s", stage, len(x), dim, len(keys),
             time.perf_counter() - t0)
    if len(x) != n_points:
        raise RuntimeError(f"{stage}: expected {n_points} points, collected {len(x)}")
    with IterationProgress(stage, sum(p.n_iters for p in plan.kmeans_params), local=False) as progress:
        result = inprocess.cluster_level_in_memory(x, keys, plan, stage, on_iteration=progress.update)
    info = _level_info(cfg, level, n_points, len(result.kmeans.centroids), "in-process", result.kmeans.history,
                       result.kmeans.objective, result.kmeans.sizes)
    info.resampling = result.resampling
    info.split = result.split
    table = pa.table({POINT_ID: ids, "cluster_id": pa.array(result.labels, pa.int32()),
                      "distance": pa.array(result.dist, pa.float32())})
    assignments = spark.createDataFrame(table, schema=kmeans.assignment_schema(points))
    cents = centroids_frame(spark, result.centroids, result.sizes)
    return _LevelTables(assignments, cents, result.sizes, result.objective, info, distances=result.dist)


def _level_on_spark(cfg: ClusteringConfig, level: int, points: DataFrame, n_points: int, k: int, dim: int,
                    stage: str, input_check: kmeans.InputCheck | None = None) -> _LevelTables:
    """The level as Spark jobs: distributed k-means, resampling steps, splits."""
    i = level - 1
    spark = points.sparkSession
    steps = n_resampling_steps(cfg, level)
    in_stage = steps > 0 and stage_resampling.fits_in_stage(k, cfg.sample_size[i], dim, cfg.in_process_max_mb)  # type: ignore[arg-type]  # sample_size resolved
    follow_up = (stage_resampling.StageResampling.for_plan(level_plan(cfg, level, k), n_points, dim)
                 if in_stage else None)
    params = level_params(cfg, level, k)
    # The barrier stage reads the points once and does everything that needs them; cache
    # them only when later jobs read them again (resampling as Spark jobs, splits): at 10M
    # x 128 the cache is a 5 GB disk write.
    read_again = (steps > 0 and not in_stage) or cfg.n_splits[i] > 1 or \
        kmeans.choose_engine(spark, params, k, dim) != "barrier"
    if read_again:
        points = points.persist(kmeans.points_storage_level(n_points, dim))
    try:
        result = kmeans.fit(points, params, stage=stage, n_points=n_points, dim=dim, follow_up=follow_up,
                            input_check=input_check)
    except Exception:
        if read_again:
            points.unpersist()
        raise
    info = _level_info(cfg, level, n_points, k, result.engine, result.history, result.objective, result.sizes)
    centroids, assignments, sizes, objective = result.centroids, result.assignments, result.sizes, result.objective
    done_in_stage = result.follow_up_info
    if done_in_stage is not None:  # resampling ran inside the k-means stage
        info.objective_kmeans, info.sizes_kmeans = done_in_stage["objective_kmeans"], done_in_stage["sizes_kmeans"]
        info.sizes_kmeans_histogram, info.resampling = (done_in_stage["sizes_kmeans_histogram"],
                                                        done_in_stage["resampling"])
    log.info("%s: k-means K=%d on %d points, %d iterations: objective %.6g, sizes %s (%.1f s%s)", stage, k,
             n_points, len(result.history), info.objective_kmeans, info.sizes_kmeans, result.seconds,
             f", with {steps} resampling step(s) in the same stage" if done_in_stage is not None else "")
    for entry in info.resampling if done_in_stage is not None else []:
        log.info("%s · resampling step %d (in the k-means stage): sample %d points, objective %.6g, sizes %s (%.1f s)",
                 stage, entry["step"], entry["sample_points"], entry["objective"], entry["sizes"], entry["seconds"])
    owner: Any = result  # what holds the current assignments' cache (the fit's, then a step's frame)
    for step in range(1, steps + 1) if done_in_stage is None else []:
        centroids, assignments, sizes, objective, entry = _resampling_step_on_spark(
            cfg, level, step, points, assignments, owner, len(centroids), dim, stage)
        owner = assignments
        info.resampling.append(entry)
    cents_df = centroids_frame(spark, centroids, sizes)
    cached = [points] if read_again else []
    if cfg.n_splits[i] > 1:
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        describe_work(spark, f"{stage} · split into {cfg.n_splits[i]}")
        split_assign, split_cents, split_out = split_clusters(points, assignments, cfg.n_splits[i], cfg.n_iters[i],
                                                              split_seed(cfg, level), cfg.distance)
        split_assign = split_assign.persist(StorageLevel.MEMORY_AND_DISK)
        cents_df = split_cents.persist(StorageLevel.MEMORY_AND_DISK)
        sizes = np.array([r["size"] for r in cents_df.select("size").collect()], dtype=np.int64)
        term = F.col("distance").cast("double") ** 2 if cfg.distance == "l2" else F.col("distance")
        objective = float(split_assign.agg(F.sum(term)).collect()[0][0] or 0.0)
        # Both frames are materialised now: the per-cluster output they came from can go.
        split_out.unpersist()
        owner.unpersist()
        assignments = owner = split_assign
        cached.append(cents_df)
        info.split = {"n_splits": cfg.n_splits[i], "n_clusters": int(len(sizes))}
    cached.append(owner)
    return _LevelTables(assignments, cents_df, sizes, objective, info, cached)


def _resampling_step_on_spark(cfg: ClusteringConfig, level: int, step: int, points: DataFrame,
                              assignments: DataFrame, owner: Any, k: int, dim: int, stage: str
                              ) -> tuple[np.ndarray, DataFrame, np.ndarray, float, dict[str, Any]]:
    """One resampling step: per-cluster sample (window), fresh k-means on it, reassign all
    points. Releases the previous ``assignments`` (``owner.unpersist()``: the k-means
    result or frame that holds their cache); returns the new (persisted) ones."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    i = level - 1
    spark = points.sparkSession
    t0 = time.perf_counter()
    describe_work(spark, f"{stage} · resampling step {step} · select sample")
    sample = resampling_sample(points, assignments, cfg.sample_size[i], cfg.sampling_strategy[i],  # type: ignore[arg-type]  # sample_size resolved
                               seed=resampling_seed(cfg, level, step))
    sample = sample.persist(kmeans.points_storage_level(k * cfg.sample_size[i], dim))  # type: ignore[operator]  # sample_size resolved
    n_sample = sample.count()
    # A fresh k-means (new init) on the per-cluster sample: the sample holds about the
    # same number of points per cluster, so the new centroids follow the clusters, not
    # the density, which is what pulls them toward a uniform cover of the support.
    k = lloyd.clamp_clusters(k, n_sample, f"{stage} · resampling {step}")
    step_params = level_params(cfg, level, k, seed_offset=step)
    res = kmeans.fit(sample, step_params, stage=f"{stage} · resampling {step}", n_points=n_sample, dim=dim)
    sample.unpersist()
    res.unpersist()
    owner.unpersist()
    new_assign = kmeans.assign_points(points, res.centroids, cfg.distance, stage=f"{stage} · resampling {step}",
                                      params=step_params)
    assignments = new_assign.persist(StorageLevel.MEMORY_AND_DISK)
    agg = assignments.groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("distance").cast("double") * F.col("distance").cast("double")).alias("sq"),
        F.sum(F.col("distance").cast("double")).alias("d")).collect()
    sizes = np.zeros(k, dtype=np.int64)
    objective = 0.0
    for r in agg:
        sizes[r["cluster_id"]] = r["n"]
        objective += float(r["sq"] if cfg.distance == "l2" else r["d"])
    entry = {"step": step, "sample_points": n_sample, "objective": objective,
             "sizes": kernels.size_stats(sizes), "seconds": time.perf_counter() - t0}
    log.info("%s · resampling step %d: sample %d points, objective %.6g, sizes %s (%.1f s)", stage, step,
             n_sample, objective, entry["sizes"], entry["seconds"])
    return res.centroids, assignments, sizes, objective, entry


def _write_level(run: RunFolder, level: int, assignments: DataFrame, cents_df: DataFrame) -> None:
    """Write the level's two tables; adds ``flat_size`` (original points below each
    cluster) and an empty ``parent_id`` (filled by the next level)."""
    from pyspark.sql import functions as F

    spark = assignments.sparkSession
    if level == 1:
        cents_df = cents_df.withColumn("flat_size", F.col("size"))
    else:
        prev = run.read_centroids(level - 1).select(F.col("cluster_id").cast("long").alias(POINT_ID), "flat_size")
        flat = assignments.join(prev, POINT_ID).groupBy("cluster_id").agg(F.sum("flat_size").alias("flat_size"))
        cents_df = cents_df.join(flat, "cluster_id", "left").fillna(0, ["flat_size"])
    cents_df = cents_df.select(F.col("cluster_id").cast("int"), F.col("centroid").cast("array<float>"),
                               F.col("size").cast("long"), F.col("flat_size").cast("long"),
                               F.lit(None).cast("int").alias("parent_id"))
    describe_work(spark, f"level {level} · write tables")
    write_table(assignments, run.assignments_path(level), run.format)
    write_table(cents_df, run.centroids_path(level), run.format)


def fill_parents(run: RunFolder, level: int) -> None:
    """Set ``parent_id`` of level ``level-1``'s clusters from level ``level``'s assignments.

    Delta: a MERGE commit (the level's own rows are not rewritten by a new overwrite).
    Parquet: an atomic rewrite of the small centroids table. The assignments are read back
    from their written table (K rows of level l-1) rather than from the frame that wrote
    them, whose cache is released and whose lineage is the level's whole k-means.
    """
    from pyspark.sql import functions as F

    spark = run.spark
    parents = run.read_assignments(level).select(
        F.col(POINT_ID).cast("int").alias("child_id"), F.col("cluster_id").alias("new_parent"))
    target = run.centroids_path(level - 1)
    if run.format == "delta":
        merge_into(target, parents, "t.cluster_id = s.child_id",
                   "WHEN MATCHED THEN UPDATE SET parent_id = s.new_parent")
        return
    current = read_table(spark, target, run.format).drop("parent_id")
    updated = current.join(parents, current["cluster_id"] == parents["child_id"], "left").select(
        *[current[c] for c in current.columns], F.col("new_parent").cast("int").alias("parent_id"))
    write_table(updated.localCheckpoint(), target, run.format)


def cluster(run: RunFolder, cfg: ClusteringConfig, base_points: DataFrame, n_points: int, dim: int,
            input_check: kmeans.InputCheck | None = None) -> list[LevelStats]:
    """Run (or resume) all levels; returns per-level statistics. ``dim``: the input's
    embedding dimension (every level has it); ``input_check``: level 1 counts the input
    checks while loading (the caller skipped the validation pass)."""
    infos = []
    available = n_points
    for level in range(1, cfg.n_levels + 1):
        done = run.level_stats(level)
        if done is not None and done.complete:
            log.info("level %d: already complete in %s, skipping (resume)", level, run.path)
            infos.append(done)
            available = done.n_clusters
            continue
        points = level_points(run, level, base_points)
        info = run_level(run, cfg, level, points, available, dim, input_check if level == 1 else None)
        run.mark_level(info)
        infos.append(info)
        available = info.n_clusters
    return infos
