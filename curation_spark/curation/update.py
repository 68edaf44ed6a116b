"""``curation-spark update``: keep a finished hierarchy and its curated tables current.

New input rows are assigned to their nearest level-1 centroid (the engine's assignment
path, so the centroid index serves large K; the exact distance is recorded), rows gone
from the input are dropped, ``size`` / ``flat_size`` are updated at every level so they
add up to the input's rows again, and every curated table the run recorded is sampled
again with its own settings. No centroid moves and old rows keep their clusters.

Two phases make it atomic and resumable:

1. **Stage** (all the work): the new assignments, the dropped ids, every level's new
   sizes and every refreshed curated table are written under ``_update/``.
   Nothing the run's readers see changes; a failure here leaves the run exactly as it was
   and the next ``update`` starts the staging again.
2. **Commit** (small): ``run.json`` records the staged update as ``pending_update``, then
   the live tables take the staged content (level-1 assignments: one Delta MERGE, or an
   atomic rewrite for Parquet; centroids tables with the staged sizes and curated tables:
   one overwrite each), then
   ``run.json`` records the update as done and the staging folder goes. Every step is
   idempotent, so a failure inside the commit is finished by the next ``update``; until
   then ``sample`` and ``cluster`` refuse the run folder.

Drift (:mod:`curation_spark.curation.drift`): the fit recorded its own rows' distances to
their centroid (mean, 99th percentile) when it wrote level 1; every update's new rows are
compared with them, and when more than ``update.drift_threshold`` of the new rows lie beyond
the fit's 99th percentile, ``update`` warns that a full re-cluster is due (``report`` shows it).

The new rows are not validated in a pass of their own: their assignment pass checks every
row (null embedding, another dimension, NaN / Inf) and stages the reason next to the
assignment, and one job over the staged rows gives the checks, the drift figures and every
cluster's net change in rows; a bad row is refused with the validation's one-line error
before anything live changes.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from curation_spark.config import UNIT_NORM_TOLERANCE
from curation_spark.curation import drift, hierarchy, sampling
from curation_spark.curation.changes import ANTI_JOIN, CHANGE_FEED, InputChanges, find_changes
from curation_spark.engine import kmeans
from curation_spark.errors import ConfigError, CurationError, InputError
from curation_spark.io import paths
from curation_spark.io.blocks import BlockChecks, batches_to_block
from curation_spark.io.run_metadata import RunMetadata, SampleSummary, UpdateSummary
from curation_spark.io.runfolder import RunFolder, config_differences, open_existing
from curation_spark.io.spark_api import describe_work
from curation_spark.io.tables import (
    POINT_ID,
    arrow_frame,
    check_columns,
    merge_into,
    raise_for_checks,
    read_input,
    read_table,
    to_points,
    write_table,
)
from curation_spark.method import kernels

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import Config
    from curation_spark.method.lloyd import KMeansParams

log = logging.getLogger(__name__)

#: The columns of level 1's assignments (the staged new rows have two more: their checks).
ASSIGNMENT_COLUMNS = (POINT_ID, "cluster_id", "distance")
#: The staged tables are the update's own scratch (run.json's ``pending_update`` is what
#: makes them count), so plain Parquet: no Delta log to replay at every read of a new table.
STAGING_FORMAT = "parquet"
#: New rows per assignment task: enough work per task that a day's 100k rows are not
#: spread over dozens of tiny Python tasks, enough tasks for a cluster at 10M rows.
ASSIGN_ROWS_PER_TASK = 50_000
#: Dropped ids (``point_id, cluster_id``) per staged file.
DROPPED_ROWS_PER_FILE = 2_000_000


@dataclass
class UpdateResult:
    """What ``update`` did: ``summary`` is None when there was nothing to do."""

    run_path: str
    summary: UpdateSummary | None
    message: str


def update(config: Config, spark: SparkSession | None = None) -> UpdateResult:
    """Bring the run in ``output.path`` up to date with its input (see the module doc)."""
    from curation_spark.curation.commands import input_version, prepare

    started = time.perf_counter()
    config, spark = prepare(config, spark)
    if not config.input.path and not config.input.table:
        raise ConfigError("input.path: `update` reads the input's new and deleted rows from a table: give "
                          "input.path or input.table (a run made from a DataFrame is updated by running it again)")
    run = open_existing(spark, config.output.require_path())
    check_updatable(run, config)
    meta = run.metadata
    assert meta is not None
    if meta.pending_update is not None:
        log.warning("update: finishing the update of input version %s -> %s that was interrupted while committing",
                    meta.pending_update.from_version, meta.pending_update.to_version)
        commit(run, meta.pending_update)
    raw = read_input(spark, config.input)
    check_same_schema(run, raw, config)
    from_version, to_version = meta.input.delta_version, input_version(spark, config)
    stats1 = run.level_stats(1)
    assert stats1 is not None
    t0 = time.perf_counter()
    describe_work(spark, "update · find changes")
    dim = run_dimension(run)
    changes = find_changes(spark, config.input, raw, run.read_assignments(1).select(POINT_ID, "cluster_id"),
                           stats1.n_points, from_version, to_version,
                           in_driver=lambda n_input: updates_in_driver(meta, n_input, dim))
    if changes.method == ANTI_JOIN:
        try:
            check_same_dimension(run, raw, config)
        except InputError:
            changes.release()
            raise
    found_in = time.perf_counter() - t0
    log.info("update: %d rows to assign, %d to drop (%d rewritten in place) by %s; %d input rows read (%.1f s)",
             changes.n_added, changes.n_dropped, changes.n_changed, changes.method, changes.rows_read, found_in)
    if changes.empty:
        changes.release()
        if to_version != from_version:  # e.g. an OPTIMIZE commit: same rows, newer version
            meta.input.delta_version = to_version
            run.save()
        where = f"input version {to_version}" if to_version is not None else "the input"
        message = (f"update: nothing to do: {where} has the run's {stats1.n_points} rows, none added or deleted "
                   f"({changes.method})")
        log.info(message)
        return UpdateResult(run.path, None, message)
    try:
        summary = stage(run, config, raw, changes, dim, from_version, to_version)
    finally:
        changes.release()
    summary.phases["find_changes"] = round(found_in, 1)
    summary.seconds = round(time.perf_counter() - started, 1)
    meta.pending_update = summary
    run.save()  # the commit starts: from here on the next `update` finishes it
    commit(run, summary, started)
    return UpdateResult(run.path, summary, describe(summary))


def describe(summary: UpdateSummary) -> str:
    """One paragraph for the CLI and the notebooks."""
    d = summary.drift
    versions = (f" (input version {summary.from_version} -> {summary.to_version})"
                if summary.to_version is not None else "")
    lines = [f"update{versions}: +{summary.rows_added} rows, -{summary.rows_deleted} rows, "
             f"{summary.rows_changed} rewritten, by {summary.method}; {summary.rows_read} input rows read; "
             f"level 1 now holds {summary.n_points} points; {summary.seconds:.1f} s"]
    if summary.samples:
        lines.append(f"curated tables refreshed: {', '.join(summary.samples)}")
    if d is not None:
        lines.append(f"drift: new rows' mean distance {d.new_mean_distance:.4g} vs the fit's {d.old_mean_distance:.4g} "
                     f"(x{d.mean_ratio:.2f}); {100 * d.share_beyond_p99:.2f} % beyond the fit's 99th percentile "
                     f"(threshold {100 * d.threshold:.2f} %)"
                     + ("; a full re-cluster is due" if d.recluster_due else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------- checks


def check_updatable(run: RunFolder, config: Config) -> None:
    """The run must be this config's, finished, and without near-duplicate removal."""
    meta = run.metadata
    assert meta is not None
    differences = config_differences(meta.config, config) if meta.fingerprint != config.clustering_fingerprint() else []
    if differences:
        raise ConfigError(f"output.path: {paths.display(run.path)} holds a run of a different clustering config "
                          f"({'; '.join(differences)}); `update` takes the config the run was made with")
    n_levels = meta.config.clustering.n_levels
    if run.n_levels_done() < n_levels:
        raise ConfigError(f"output.path: {run.path} has {run.n_levels_done()} of {n_levels} levels complete; "
                          "finish it with `curation-spark cluster` (or `run`) before updating it")
    if meta.dedup is not None or config.dedup.enabled:
        raise ConfigError("dedup: `update` does not yet take runs with near-duplicate removal (new rows would "
                          "have to be compared with the kept points); re-run `curation-spark run --overwrite`")


def check_same_schema(run: RunFolder, raw: DataFrame, config: Config) -> None:
    """Refuse an input whose columns or id type changed since the run (its schema only)."""
    cfg = config.input
    check_columns(raw, cfg.id_col, cfg.embedding_col)
    id_now = raw.schema[cfg.id_col].dataType.simpleString()
    id_then = run.read_assignments(1).schema[POINT_ID].dataType.simpleString()
    if id_now != id_then:
        raise InputError(f"input.id_col: column {cfg.id_col!r} is {id_now} now but was {id_then} when the run in "
                         f"{run.path} was made; re-cluster with `curation-spark run --overwrite`")


def check_same_dimension(run: RunFolder, raw: DataFrame, config: Config) -> None:
    """Refuse an input rewritten at another embedding dimension under the same ids: one row
    read. Only needed when ids are compared (the change feed hands rewritten rows to the
    assignment, whose checks refuse another dimension)."""
    meta = run.metadata
    assert meta is not None
    dim = first_dimension(raw, config.input.embedding_col)
    if meta.input.dim is not None and dim is not None and dim != meta.input.dim:
        raise dimension_changed(run, config.input.embedding_col, str(dim), meta.input.dim)


def dimension_changed(run: RunFolder, embedding_col: str, now: str, then: int) -> InputError:
    return InputError(f"input.embedding_col: column {embedding_col!r} has dimension {now} now but {then} when the "
                      f"run in {run.path} was made; the hierarchy cannot take these rows: re-cluster with "
                      "`curation-spark run --overwrite`")


def first_dimension(raw: DataFrame, embedding_col: str) -> int | None:
    """The size of the first non-null embedding (one row read; every new row's size is
    checked by the assignment's checks)."""
    from pyspark.sql import functions as F

    from curation_spark.io.tables import embedding_array_column

    first = (raw.select(embedding_array_column(raw, embedding_col).alias("_e")).where(F.col("_e").isNotNull())
             .select(F.size("_e").alias("d")).head(1))
    return int(first[0]["d"]) if first else None


# --------------------------------------------------------------------------- stage


def staged(run: RunFolder, name: str) -> str:
    return paths.join(run.update_staging_path(), name)


def read_staged(run: RunFolder, name: str) -> DataFrame:
    return read_table(run.spark, staged(run, name), STAGING_FORMAT)


def write_staged(df: DataFrame, run: RunFolder, name: str) -> None:
    write_table(df, staged(run, name), STAGING_FORMAT)


def stage(run: RunFolder, config: Config, raw: DataFrame, changes: InputChanges, dim: int, from_version: int | None,
          to_version: int | None) -> UpdateSummary:
    """Write the update's tables under ``_update/`` (nothing live changes); returns the
    summary the commit works from."""
    spark = run.spark
    meta = run.metadata
    assert meta is not None
    cfg = config.input
    phases: dict[str, float] = {}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t = time.perf_counter()
    describe_work(spark, "update · stage")
    if paths.exists(spark, run.update_staging_path()):
        log.info("update: removing the staging folder of an earlier update that did not reach its commit")
        paths.delete(spark, run.update_staging_path())
    n_points = meta.levels[1].n_points - changes.n_dropped + changes.n_added
    if n_points == 0:
        raise InputError(f"input: every row of the run in {run.path} was deleted and none added; nothing to curate")

    in_driver = updates_in_driver(meta, n_points, dim)
    if in_driver:
        # A small run: the new rows come to the driver (as the fit's in-process path takes
        # the whole level), no Python worker starts and the summary needs no Spark job.
        points = (changes.added_points if changes.added_points is not None
                  else to_points(changes.added, cfg.id_col, cfg.embedding_col).toArrow())
        checked_rows = assign_in_driver(run, points, dim)
        dropped_rows = changes.dropped_rows if changes.dropped_rows is not None else changes.dropped.toArrow()
        write_staged(arrow_frame(run.spark, checked_rows).coalesce(1), run, "added")
    else:
        new_rows = changes.added.coalesce(max(1, -(-changes.n_added // ASSIGN_ROWS_PER_TASK)))
        # The new rows are checked in their assignment pass (no validation pass before it):
        # nothing live changes until the staged rows are judged below.
        assign_new_rows(run, to_points(new_rows, cfg.id_col, cfg.embedding_col), staged(run, "added"), dim)
    write_staged(changes.dropped.coalesce(max(1, -(-changes.n_dropped // DROPPED_ROWS_PER_FILE))), run, "dropped")
    checked, dropped = read_staged(run, "added"), read_staged(run, "dropped")
    phases["assign"] = round(time.perf_counter() - t, 1)
    log.info("update: %d new rows assigned to their nearest level-1 centroid%s (%.1f s)", changes.n_added,
             " in the driver" if in_driver else "", phases["assign"])

    t = time.perf_counter()
    if meta.drift_baseline is None:  # a run made before the fit recorded it
        meta.drift_baseline = drift.baseline_of_assignments(run.read_assignments(1))
    phases["drift"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    p99 = meta.drift_baseline.p99_distance
    if in_driver:
        staged_rows = summarise_rows(checked_rows, dropped_rows, dim, p99)
    else:
        staged_rows = summarise_staged(checked, dropped, dim, p99)
    if changes.method != CHANGE_FEED and staged_rows.totals.rows:  # (the feed's rows are one per id)
        staged_rows.totals.duplicate_ids = staged_rows.totals.rows - staged_rows.totals.null_ids - (
            distinct_ids(checked_rows) if in_driver else
            checked.where(checked[POINT_ID].isNotNull()).select(POINT_ID).distinct().count())
    judge_new_rows(staged_rows, run, cfg.id_col, cfg.embedding_col, dim)
    drift_now = drift.judge(staged_rows.totals.rows, staged_rows.distance_sum, staged_rows.beyond_p99,
                            meta.drift_baseline, config.update.drift_threshold)
    phases["validate"] = round(time.perf_counter() - t, 1)
    if drift_now.recluster_due:
        log.warning("update: %.2f %% of the new rows lie beyond the fit's 99th-percentile distance (threshold "
                    "update.drift_threshold = %.2f %%): the hierarchy no longer covers the input well, a full "
                    "re-cluster (`curation-spark run --fresh`) is due", 100 * drift_now.share_beyond_p99,
                    100 * drift_now.threshold)

    t = time.perf_counter()
    added = checked.select(*ASSIGNMENT_COLUMNS)
    n_levels = meta.config.clustering.n_levels
    sizes = stage_centroids(run, n_levels, staged_rows.moves_ids, staged_rows.moves, n_points)
    phases["sizes"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    view = StagedRun(run, added, dropped, n_points, sizes)
    for name, recorded in meta.samples.items():
        stage_sample(view, name, recorded, raw, cfg.id_col)
    phases["sample"] = round(time.perf_counter() - t, 1)
    return UpdateSummary(from_version=from_version, to_version=to_version, method=changes.method,
                         rows_read=changes.rows_read, rows_added=changes.n_added - changes.n_changed,
                         rows_deleted=changes.n_dropped - changes.n_changed, rows_changed=changes.n_changed,
                         n_points=n_points, samples=list(meta.samples), staged=run.update_staging_path(),
                         started=started, phases=phases, drift=drift_now, in_driver=in_driver)


def updates_in_driver(meta: RunMetadata, n_rows: int, dim: int) -> bool:
    """A run whose level 1 the fit would cluster in the driver (its embeddings within the
    run's ``clustering.in_process_max_mb``, :func:`hierarchy.in_process_decision`) is
    updated in the driver: the new rows are assigned there, and level 1's assignments are
    rewritten whole at the commit instead of merged. On small tables an update is mostly
    Spark's fixed costs per job and per Delta operation; this path has fewer of both."""
    return hierarchy.in_process_decision(meta.config.clustering, n_rows, dim)[0]


def assign_in_driver(run: RunFolder, points: pa.Table, dim: int) -> pa.Table:
    """:func:`assign_new_rows` in the driver for new rows there (``point_id, embedding``):
    the same search as the Spark pass, the same checks and columns."""
    centroids, distance, params = level_one_search(run, dim)
    return kmeans.assign_table(points, centroids, distance, params, with_checks=True)


def level_one_search(run: RunFolder, dim: int) -> tuple[np.ndarray, str, KMeansParams]:
    """What a new row's nearest level-1 centroid is searched with: the centroids, the run's
    distance and level 1's own assignment settings (the centroid index when K is large)."""
    meta = run.metadata
    assert meta is not None
    centroids = level_one_centroids(run, dim)
    clustering = dataclasses.replace(meta.config.clustering, distance=meta.distance)
    return centroids, meta.distance, hierarchy.level_params(clustering, 1, len(centroids))


def level_one_centroids(run: RunFolder, dim: int) -> np.ndarray:
    """Level 1's centroids as a (K, D) float32 array in ``cluster_id`` order (K x D to the
    driver, as the k-means itself holds them)."""
    ids, c = batches_to_block(hierarchy.centroid_points(run, 1).toArrow().to_batches(), dim)
    if not np.array_equal(ids.to_numpy(), np.arange(len(c))):
        raise CurationError(f"{run.centroids_path(1)}: cluster ids are not 0..{len(c) - 1}; the run folder is damaged")
    return c


def run_dimension(run: RunFolder) -> int:
    """The embedding dimension of the run (run.json, else its level-1 centroids)."""
    meta = run.metadata
    assert meta is not None
    if meta.input.dim is not None:
        return int(meta.input.dim)
    try:
        return kmeans.embedding_dim(hierarchy.centroid_points(run, 1))
    except ValueError:  # (an empty table)
        raise CurationError(f"{run.centroids_path(1)}: no centroids; the run folder is damaged") from None


def assign_new_rows(run: RunFolder, points: DataFrame, target: str, dim: int) -> None:
    """Nearest level-1 centroid of every new row with the level's own assignment settings
    (the centroid index when K is large), written to ``target`` with the input checks of
    each row (``kmeans.assign_points(with_checks=True)``: judged by :func:`judge_new_rows`)."""
    centroids, distance, params = level_one_search(run, dim)
    assignments = kmeans.assign_points(points, centroids, distance, stage="update", params=params, with_checks=True)
    write_table(assignments, target, STAGING_FORMAT)


@dataclass
class StagedRows:
    """What one job over the staged new rows and dropped ids tells the driver: the input
    checks of the new rows, their drift figures and norms, and each level-1 cluster's net
    change in rows (``moves`` for ``moves_ids``)."""

    totals: BlockChecks
    distance_sum: float
    beyond_p99: int
    norm_min: float | None
    norm_max: float | None
    moves_ids: np.ndarray
    moves: np.ndarray


def summarise_staged(checked: DataFrame, dropped: DataFrame, dim: int, p99_distance: float) -> StagedRows:
    """One job: a rollup of the staged new rows by cluster (rows per cluster; on the total
    row every figure over all new rows, packed in one array column so that the per-cluster
    rows carry an id and a count only) next to the dropped ids per cluster. O(K) rows
    reach the driver."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    d, c, distance = F.col(kmeans.EMBEDDING_DIM), F.col("cluster_id"), F.col("distance")
    figures = [F.count(F.lit(1)), F.sum(F.col(POINT_ID).isNull().cast("long")), F.sum(d.isNull().cast("long")),
               F.sum((d != dim).cast("long")), F.sum(((d == dim) & c.isNull()).cast("long")), F.min(d), F.max(d),
               F.sum(distance), F.sum((distance > F.lit(p99_distance)).cast("long")), F.min(kmeans.NORM),
               F.max(kmeans.NORM)]
    added = checked.rollup("cluster_id").agg(
        F.count(F.lit(1)).alias("n"), F.grouping("cluster_id").cast("boolean").alias("_total"),
        F.when(F.grouping("cluster_id") == 1, F.array(*[f.cast("double") for f in figures])).alias("_figures"))
    gone = dropped.groupBy("cluster_id").agg((-F.count(F.lit(1))).alias("n")).select(
        "cluster_id", "n", F.lit(False).alias("_total"), F.lit(None).cast("array<double>").alias("_figures"))
    table = added.unionByName(gone).toArrow()
    total = pc.filter(table, table.column("_total"))
    rows = pc.filter(table, pc.and_(pc.invert(table.column("_total")), pc.is_valid(table.column("cluster_id"))))
    values = total.column("_figures")[0].as_py() if total.num_rows else [0.0, 0.0, 0.0, 0.0, 0.0] + [None] * 6
    (n, null_ids, null_embeddings, bad_dim, bad_values, min_dim, max_dim, distance_sum, beyond_p99, norm_min,
     norm_max) = values

    def count(v: float | None) -> int:
        return int(v) if v is not None else 0

    checks = BlockChecks(rows=count(n), null_ids=count(null_ids), null_embeddings=count(null_embeddings),
                         bad_dim=count(bad_dim), bad_values=count(bad_values),
                         min_dim=int(min_dim) if min_dim is not None else -1,
                         max_dim=int(max_dim) if max_dim is not None else -1)
    return StagedRows(checks, float(distance_sum or 0.0), count(beyond_p99), norm_min, norm_max,
                      rows.column("cluster_id").to_numpy(zero_copy_only=False).astype(np.int64),
                      rows.column("n").to_numpy(zero_copy_only=False).astype(np.int64))


def summarise_rows(checked: pa.Table, dropped: pa.Table, dim: int, p99_distance: float) -> StagedRows:
    """:func:`summarise_staged` of the new rows and dropped ids in the driver (Arrow tables
    with the staged columns): the same figures, no Spark job."""
    import pyarrow.compute as pc

    def values(name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        col = checked.column(name)
        valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=dtype), valid

    d, has_d = values(kmeans.EMBEDDING_DIM, np.int64)
    cluster, assigned = values("cluster_id", np.int64)
    distance, has_distance = values("distance", np.float64)
    norm, has_norm = values(kmeans.NORM, np.float64)
    checks = BlockChecks(rows=checked.num_rows, null_ids=checked.column(POINT_ID).null_count,
                         null_embeddings=int((~has_d).sum()), bad_dim=int((has_d & (d != dim)).sum()),
                         bad_values=int((has_d & (d == dim) & ~assigned).sum()),
                         min_dim=int(d[has_d].min()) if has_d.any() else -1,
                         max_dim=int(d[has_d].max()) if has_d.any() else -1)
    gone = np.asarray(dropped.column("cluster_id").to_numpy(zero_copy_only=False), dtype=np.int64)
    ids = np.unique(np.concatenate([cluster[assigned], gone]))
    moves = (np.bincount(np.searchsorted(ids, cluster[assigned]), minlength=len(ids))
             - np.bincount(np.searchsorted(ids, gone), minlength=len(ids)))
    return StagedRows(checks, float(distance[has_distance].sum()),
                      int((distance[has_distance] > p99_distance).sum()),
                      float(norm[has_norm].min()) if has_norm.any() else None,
                      float(norm[has_norm].max()) if has_norm.any() else None, ids, moves.astype(np.int64))


def distinct_ids(checked: pa.Table) -> int:
    """Distinct non-null ``point_id`` values of the staged new rows (Arrow)."""
    import pyarrow.compute as pc

    return int(pc.count_distinct(checked.column(POINT_ID), mode="only_valid").as_py())


def judge_new_rows(rows: StagedRows, run: RunFolder, id_col: str, embedding_col: str, dim: int) -> None:
    """The validation's one-line errors for the staged new rows (the run's dimension is
    the reference; ``rows.totals.duplicate_ids`` counted by the caller where ids can
    repeat), and the norm warning of a cosine run."""
    meta = run.metadata
    assert meta is not None
    checks = rows.totals
    if not checks.rows:  # only deletions
        return
    if not checks.null_embeddings and checks.bad_dim == checks.rows:
        seen = str(checks.min_dim) if checks.min_dim == checks.max_dim else f"{checks.min_dim}..{checks.max_dim}"
        raise dimension_changed(run, embedding_col, seen, dim)
    raise_for_checks(checks, id_col, embedding_col, dim)
    if meta.distance == "cosine" and meta.config.clustering.distance == "auto" and rows.norm_min is not None \
            and not (abs(rows.norm_min - 1) <= UNIT_NORM_TOLERANCE and abs(rows.norm_max - 1) <= UNIT_NORM_TOLERANCE):  # type: ignore[operator]  # set with norm_min
        log.warning("update: the run chose cosine for unit-norm embeddings, but the new rows' norms span "
                    "%.4f..%.4f; they are assigned by cosine all the same", rows.norm_min, rows.norm_max)


def stage_centroids(run: RunFolder, n_levels: int, move_ids: np.ndarray, moves: np.ndarray,
                    n_points: int) -> sampling.LevelSizes:
    """Every level's new ``size`` (level 1) and ``flat_size`` (all levels), moved by the
    rows added and dropped below each cluster (``moves``: the net change of level-1 cluster
    ``move_ids``, from :func:`summarise_staged`), staged as one small table ``sizes``
    (``level, cluster_id, size, flat_size``; the centroids themselves never change) and
    returned as :func:`sampling.centroid_sizes` gives them (what the re-sampling takes).
    The counts are O(K) numbers computed in the driver (one job for every level's sizes
    and parents) and checked to add up to ``n_points`` before anything is written."""
    import pyarrow as pa

    levels = sampling.centroid_sizes(run, n_levels)
    delta = _per_cluster(levels[1]["cluster_id"], move_ids, moves,
                         f"{run.assignments_path(1)} / {run.centroids_path(1)}")
    parts, new_levels = [], {}
    for level in range(1, n_levels + 1):
        current = levels[level]
        size = current["size"] + delta if level == 1 else current["size"]
        flat = current["flat_size"] + delta
        new_levels[level] = {**current, "size": size, "flat_size": flat}
        if int(flat.sum()) != n_points or (level == 1 and int(size.sum()) != n_points) or \
                (len(flat) and int(min(flat.min(), size.min())) < 0):
            raise CurationError(f"update: level {level}'s sizes would not add up to {n_points} points (flat_size "
                                f"{int(flat.sum())}, size {int(size.sum())}); nothing was committed")
        parts.append(pa.table({"level": pa.array(np.full(len(size), level), pa.int32()),
                               "cluster_id": pa.array(current["cluster_id"], pa.int32()),
                               "size": pa.array(size, pa.int64()), "flat_size": pa.array(flat, pa.int64())}))
        if level < n_levels:  # a cluster of the next level moves by the sum of its children's moves
            upper = levels[level + 1]["cluster_id"]
            pos = np.searchsorted(upper, current["parent_id"])
            delta = np.bincount(pos, weights=delta, minlength=len(upper)).astype(np.int64)
    write_staged(run.spark.createDataFrame(pa.concat_tables(parts)).coalesce(1), run, "sizes")
    return new_levels


def centroids_with_staged_sizes(run: RunFolder, level: int) -> DataFrame:
    """Level ``level``'s live centroids table with the staged ``size`` / ``flat_size``."""
    from pyspark.sql import functions as F

    sizes = read_staged(run, "sizes").where(F.col("level") == level).drop("level")
    live = RunFolder.read_centroids(run, level)  # the live table, also for a StagedRun
    return live.drop("size", "flat_size").join(sizes, "cluster_id").select(*live.columns)


def _per_cluster(cluster_ids: np.ndarray, ids: np.ndarray, values: np.ndarray, where: str) -> np.ndarray:
    """``values`` by ``ids`` spread over ``cluster_ids`` (sorted), zero elsewhere."""
    out = np.zeros(len(cluster_ids), dtype=np.int64)
    if len(ids):
        pos = np.searchsorted(cluster_ids, ids)
        known = (pos < len(cluster_ids)) & (cluster_ids[np.minimum(pos, len(cluster_ids) - 1)] == ids)
        if not known.all():
            raise CurationError(f"{where}: assignments name clusters the centroids table does not have; "
                                "the run folder is damaged")
        np.add.at(out, pos, values.astype(np.int64))
    return out


class StagedRun(RunFolder):
    """The run as it will be once the update is committed, read from the staged tables
    and the live assignments: what the curated tables are sampled from before any live
    table changes."""

    def __init__(self, run: RunFolder, added: DataFrame, dropped: DataFrame, n_points: int,
                 sizes: sampling.LevelSizes) -> None:
        super().__init__(run.spark, run.path, run.format)
        self.metadata = copy.deepcopy(run.metadata)
        assert self.metadata is not None
        self.metadata.levels[1].n_points = n_points
        self._added, self._dropped = added, dropped
        #: Every level's staged sizes, in the driver (what the sampling's targets start from).
        self.sizes = sizes

    def read_centroids(self, level: int) -> DataFrame:
        return centroids_with_staged_sizes(self, level)

    def read_assignments(self, level: int) -> DataFrame:
        if level != 1:
            raise CurationError("update: only level 1's assignments change")
        kept = super().read_assignments(1).join(self._dropped.select(POINT_ID), POINT_ID, "left_anti")
        return kept.unionByName(self._added)


def stage_sample(view: StagedRun, name: str, recorded: SampleSummary, raw: DataFrame, id_col: str) -> None:
    """A curated table sampled again with the settings it was made with (and the input
    columns it carries), into the staging folder."""
    spark = view.spark
    params = sampling.SamplingParams(recorded.target_size, recorded.multiplier, recorded.strategy, recorded.seed)
    selection, _ = sampling.curate(view, view.config.clustering.n_levels, params, view.sizes)
    if paths.exists(spark, recorded.path):
        carried = [c for c in read_table(spark, recorded.path, view.format).columns if c not in ("id", "copy",
                                                                                                  "cluster_id")]
        selection = sampling.with_input_columns(selection, raw, id_col, carried)
    write_staged(selection, view, f"samples/{name}")
    log.info("update: curated table %s sampled again (target %d)", name, recorded.target_size)


# --------------------------------------------------------------------------- commit


def commit(run: RunFolder, summary: UpdateSummary, started: float | None = None) -> None:
    """Move the staged tables into place and record the update (idempotent: a commit that
    was interrupted is finished by running this again). ``started``: the update's
    ``perf_counter`` start, for its total seconds (a finished interrupted commit keeps the
    seconds the staging recorded)."""
    from pyspark.sql import functions as F

    spark = run.spark
    meta = run.metadata
    assert meta is not None
    t = time.perf_counter()
    describe_work(spark, "update · commit")
    if not paths.exists(spark, summary.staged):
        raise CurationError(f"run.json: pending_update: its staged tables {summary.staged} are missing; re-cluster "
                            "with `curation-spark run --overwrite`")
    commit_assignments(run, rewritten=summary.rows_changed > 0, whole=summary.in_driver)
    n_levels = meta.config.clustering.n_levels
    for level in range(1, n_levels + 1):  # (Delta reads the version it overwrites; Parquet goes via a sibling)
        write_table(centroids_with_staged_sizes(run, level), run.centroids_path(level), run.format)
    for name in summary.samples:
        recorded = meta.samples[name]
        sample = read_staged(run, f"samples/{name}")
        recorded.rows = sample.count()  # (Parquet: from the footers)
        write_table(sample, recorded.path, run.format)
    sizes = (read_staged(run, "sizes").where(F.col("level") == 1).select("cluster_id", "size").toArrow()
             .sort_by("cluster_id"))
    level1 = meta.levels[1]
    level1.n_points = summary.n_points
    level1.sizes = kernels.size_stats(sizes.column("size").to_numpy())
    level1.sizes_histogram = kernels.size_histogram(sizes.column("size").to_numpy())
    meta.input.n_rows, meta.input.delta_version = summary.n_points, summary.to_version
    summary.phases["commit"] = round(summary.phases.get("commit", 0.0) + time.perf_counter() - t, 1)
    summary.status = "complete"
    if started is not None:
        summary.seconds = round(time.perf_counter() - started, 1)
    meta.updates.append(summary)
    meta.pending_update = None
    run.save()
    paths.delete(spark, summary.staged)
    log.info("update: committed (%.1f s)", summary.phases["commit"])


def commit_assignments(run: RunFolder, rewritten: bool = True, whole: bool = False) -> None:
    """Level 1's assignments without the dropped ids and with the new rows: one Delta MERGE
    (rows matched by ``point_id``: dropped ones deleted, rewritten ones updated, new ones
    inserted; running it again changes nothing), or an atomic rewrite for Parquet and for
    a small run (``whole``: one overwrite costs less than a MERGE's several jobs there).
    ``rewritten``: some dropped ids come back with new rows (else no dropped id is among
    the new rows, and the MERGE source needs no anti-join to tell them apart)."""
    from pyspark.sql import functions as F

    added, dropped = read_staged(run, "added").select(*ASSIGNMENT_COLUMNS), read_staged(run, "dropped")
    target = run.assignments_path(1)
    if run.format == "delta" and not whole:
        only_dropped = dropped.join(added.select(POINT_ID), POINT_ID, "left_anti") if rewritten else dropped
        only_dropped = only_dropped.select(
            POINT_ID, F.lit(None).cast("int").alias("cluster_id"), F.lit(None).cast("float").alias("distance"),
            F.lit("d").alias("_op"))
        source = added.select(POINT_ID, "cluster_id", "distance", F.lit("u").alias("_op")).unionByName(only_dropped)
        merge_into(target, source, f"t.{POINT_ID} = s.{POINT_ID}",
                   "WHEN MATCHED AND s._op = 'd' THEN DELETE "
                   "WHEN MATCHED AND s._op = 'u' THEN UPDATE SET cluster_id = s.cluster_id, distance = s.distance "
                   f"WHEN NOT MATCHED AND s._op = 'u' THEN INSERT ({POINT_ID}, cluster_id, distance) "
                   f"VALUES (s.{POINT_ID}, s.cluster_id, s.distance)")
        return
    live = run.read_assignments(1)
    gone = dropped.select(POINT_ID).unionByName(added.select(POINT_ID))
    # (write_table writes a sibling folder from the live files before renaming it into place)
    write_table(live.join(gone, POINT_ID, "left_anti").unionByName(added), target, run.format)
