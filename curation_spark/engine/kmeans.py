"""Distributed k-means on Spark: Lloyd iterations as map-reduce over numpy blocks.

Two engines share the kernels of :mod:`curation_spark.method.kernels`:

``barrier`` (default)
    One barrier stage. Each task turns its partition into a float32 block **once**, then
    runs all Lloyd iterations in place: assign (exact faiss search, or the centroid index
    of :mod:`curation_spark.method.centroid_index` for large K), per-cluster float64 partial sums
    kept across iterations, a reduce-scatter of the sparse sums over a TCP mesh between
    the tasks (:mod:`curation_spark.method.reduce`, :mod:`curation_spark.engine.exchange`: each task
    owns a range of cluster ids and computes their centroids), then an all-gather of the
    float32 centroids. Moving the embedding column from the JVM to Python costs more than
    an iteration's GEMM, so it is paid once per k-means instead of once per iteration
    (see docs/architecture.md, "The k-means engine"). A failed task fails the barrier stage and Spark
    retries the whole stage; every step is deterministic, so the retry is identical.

``passes``
    The classic loop: the point frame is cached, centroids are broadcast, and each
    iteration is a job whose partial sums are reduced by a shuffle on the owner range
    (``applyInPandas``). Pays the JVM->Python transfer every iteration; used where barrier
    mode is unavailable (dynamic allocation).

The driver holds O(K x D): centroids, sizes and per-iteration statistics; assignments
stay distributed.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from curation_spark.engine.exchange import TaskGroup
from curation_spark.errors import InputError
from curation_spark.io.blocks import (
    BlockChecks,
    assignment_batches,
    batches_to_block,
    checked_assignment_batches,
    checked_block,
    float_matrix_to_list_array,
    from_ipc,
    to_ipc,
)
from curation_spark.io.progress import IterationProgress
from curation_spark.io.spark_api import describe_work, master, ship, task_slots
from curation_spark.io.tables import EMBEDDING, POINT_ID
from curation_spark.method import centroid_index, kernels, reduce
from curation_spark.method.lloyd import (
    BlockLloyd,
    KMeansParams,
    clamp_clusters,
    default_init_sample_size,
    init_from_sample,
    init_method,
    init_sample_cut,
    log_iteration,
    settled_shares,
    uses_index,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: The extra columns of :func:`assign_points` ``with_checks``.
EMBEDDING_DIM = "embedding_dim"
NORM = "norm"
#: Point sets larger than this (float32 embeddings) are cached on disk only.
MEMORY_CACHE_MAX_BYTES = 1024 * 1024 * 1024


#: Test hook: called in every barrier task with its partition id once its block is loaded
#: (tests inject faults through it with :func:`set_block_loaded_hook`); None in production.
_block_loaded_hook: Callable[[int], None] | None = None


def set_block_loaded_hook(hook: Callable[[int], None] | None) -> None:
    """Install (or remove, with None) the barrier engine's block-loaded hook, e.g. a function
    that fails the first task attempt to test Spark's retry of the barrier stage."""
    global _block_loaded_hook
    _block_loaded_hook = hook


class BlockFollowUp(Protocol):
    """Work a barrier stage runs on its loaded blocks after the Lloyd iterations (see
    :func:`fit`). ``key_seeds``: seeds whose ``xxhash64(point_id, seed)`` the stage carries
    as columns and hands to :meth:`run` as ``keys[seed]``, aligned with the block's rows."""

    @property
    def key_seeds(self) -> tuple[int, ...]: ...

    def run(self, group: TaskGroup, ids: Any, x: np.ndarray, labels: np.ndarray, dist: np.ndarray,
            centroids: np.ndarray, keys: dict[int, np.ndarray], stage: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]: ...


@dataclass
class KMeansResult:
    """Centroids and sizes on the driver, assignments as a (persisted) DataFrame."""

    centroids: np.ndarray
    sizes: np.ndarray
    objective: float
    assignments: DataFrame
    history: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "barrier"
    n_partitions: int = 0
    seconds: float = 0.0
    follow_up_info: dict[str, Any] | None = None
    #: Seconds of an init run inside the barrier stage (0 when the init ran before it).
    init_seconds: float = 0.0
    #: The persisted frame ``assignments`` is filtered from (the barrier stage's whole
    #: output); released with it.
    backing: DataFrame | None = None

    def unpersist(self) -> None:
        """Release the assignments and the cache behind them (call once they are written)."""
        self.assignments.unpersist()
        if self.backing is not None:
            self.backing.unpersist()


# --------------------------------------------------------------------------- helpers


def assignment_schema(points: DataFrame):
    """Schema of an assignments table (the id keeps the input's type)."""
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    return StructType([
        StructField(POINT_ID, points.schema[POINT_ID].dataType, False),
        StructField("cluster_id", IntegerType(), False),
        StructField("distance", FloatType(), False),
    ])


def checked_assignment_schema(points: DataFrame):
    """:func:`assignment_schema` of :func:`assign_points` ``with_checks``: ``cluster_id`` and
    ``distance`` null for a row that could not be assigned, ``embedding_dim`` (null: null
    embedding) and ``norm`` (the embedding's L2 norm; null for such rows)."""
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    return StructType([
        StructField(POINT_ID, points.schema[POINT_ID].dataType, True),
        StructField("cluster_id", IntegerType(), True),
        StructField("distance", FloatType(), True),
        StructField(EMBEDDING_DIM, IntegerType(), True),
        StructField(NORM, FloatType(), True),
    ])


def points_storage_level(n_rows: int, dim: int):
    """How to cache a set of points: in memory (spilling to disk) when small, on disk only
    when it is more than ``MEMORY_CACHE_MAX_BYTES`` of embeddings.

    Spark's in-memory columnar cache builds each 10,000-row batch in growing heap buffers
    and keeps whole partitions in the heap while unrolling them: with 10M x 128 points
    this exhausted a 4 GiB driver heap in local mode (bench/scale_bench.py). On disk, the
    batches stream through and the heap holds only one at a time.
    """
    from pyspark import StorageLevel

    if n_rows * dim * 4 > MEMORY_CACHE_MAX_BYTES:
        return StorageLevel.DISK_ONLY
    return StorageLevel.MEMORY_AND_DISK


def embedding_dim(points: DataFrame) -> int:
    from pyspark.sql import functions as F

    row = points.select(F.size(EMBEDDING).alias("d")).head(1)
    if not row:
        raise ValueError("cannot cluster an empty table")
    return int(row[0]["d"])


def slots(spark: SparkSession) -> int:
    from curation_spark.io.session import default_parallelism, task_cpus

    return max(1, default_parallelism(spark) // task_cpus(spark))


def layout(points: DataFrame, n_partitions: int) -> DataFrame:
    """Hash-partition the points by id: the same rows land in the same partition on every
    run, whatever the input's file layout (blocks are id-sorted inside the task)."""
    from pyspark.sql import functions as F

    return points.repartition(n_partitions, F.xxhash64(F.col(POINT_ID)))


def init_sample(points: DataFrame, n_rows: int, n_total: int, dim: int, seed: int) -> np.ndarray:
    """A seeded sample of about ``n_rows`` points gathered to the driver, independent of
    partitioning: the rows with the smallest ``xxhash64(point_id, seed)``."""
    from curation_spark.engine.seeding_spark import sample_frame  # one definition of the sample rule

    frame = sample_frame(points, n_rows, n_total, seed)
    table = frame.select(POINT_ID, EMBEDDING).toArrow()
    _, x = batches_to_block(table.to_batches(), dim)
    return x


def initial_centroids(points: DataFrame, params: KMeansParams, n_total: int, dim: int) -> np.ndarray:
    """k-means++ (greedy, 2 + ln K trials) or random rows, on a bounded driver-side sample."""
    size = params.init_sample_size or default_init_sample_size(params.n_clusters, n_total, dim)
    size = max(size, params.n_clusters)
    if init_method(params) == "two_level":
        from curation_spark.engine.seeding_spark import two_level_init_spark

        return two_level_init_spark(points, params.n_clusters, n_total, dim, params.seed, params.distance, size)
    sample = init_sample(points, size, n_total, dim, params.seed)
    return init_from_sample(sample, params)


# --------------------------------------------------------------------------- engines


def fit(points: DataFrame, params: KMeansParams, *, stage: str = "k-means",
        init_centroids: np.ndarray | None = None, n_points: int | None = None,
        dim: int | None = None, follow_up: BlockFollowUp | None = None,
        input_check: InputCheck | None = None) -> KMeansResult:
    """Run k-means on a ``point_id``/``embedding`` frame.

    Parameters
    ----------
    points
        Normalised point frame (see :func:`curation_spark.io.tables.to_points`).
    params
        Clusters, iterations, distance, init, seed, tolerance, engine.
    stage
        Label for logs, progress and Spark job descriptions, e.g. ``"level 1"``.
    init_centroids
        Start from these centroids instead of running the init.
    n_points
        Row count if already known (saves a pass).
    dim
        Embedding dimension if already known (saves a job).
    follow_up
        Work to run on the loaded blocks after the last iteration, inside the barrier stage
        (a level's resampling steps, :mod:`curation_spark.engine.stage_resampling`); its labels and
        centroids become the result's, its ``info`` is ``result.follow_up_info``. Only the
        barrier engine runs it; check ``result.follow_up_info is not None``.
    input_check
        Count the input checks of :func:`curation_spark.io.tables.validate_embeddings` while
        the blocks load, and raise its :class:`~curation_spark.errors.InputError` before any
        iteration (the caller skipped the validation pass); only where
        :func:`validates_while_loading` says so.

    Returns
    -------
    KMeansResult with ``assignments`` persisted; call ``unpersist()`` when written.
    """
    spark = points.sparkSession
    started = time.perf_counter()
    n_total = int(n_points if n_points is not None else points.count())
    if n_total == 0:
        raise ValueError(f"{stage}: no points to cluster")
    dim = int(dim) if dim is not None else embedding_dim(points)
    k = params.n_clusters
    if k > n_total:
        k = clamp_clusters(k, n_total, stage)
        params = KMeansParams(**{**params.__dict__, "n_clusters": k})
    engine = choose_engine(spark, params, k, dim)
    if input_check is not None and not validates_while_loading(spark, params):
        raise ValueError(f"{stage}: input checks while loading need the barrier engine")
    centroids: np.ndarray | None = None
    if init_centroids is not None:
        centroids = np.ascontiguousarray(init_centroids, dtype=np.float32)
        if params.distance == "cosine":
            centroids = kernels.normalize_rows(centroids)
        if len(centroids) != k:
            raise ValueError(f"{stage}: expected {k} initial centroids, got {len(centroids)}")
    elif engine != "barrier":  # the barrier stage computes the init from its blocks (init_from_blocks)
        describe_work(spark, f"{stage} · k-means init ({params.init})")
        centroids = initial_centroids(points, params, n_total, dim)
        if len(centroids) != k:
            raise ValueError(f"{stage}: expected {k} initial centroids, got {len(centroids)}")
    n_part = min(params.num_partitions or slots(spark), slots(spark)) if engine == "barrier" else (
        params.num_partitions or slots(spark))
    if engine == "barrier":
        result = _fit_barrier(points, params, centroids, dim, n_part, stage, _block_loaded_hook, follow_up,
                              n_total, input_check)
    else:
        assert centroids is not None
        result = _fit_passes(points, params, centroids, dim, n_part, stage, n_total)
    result.engine = engine
    result.n_partitions = n_part
    result.seconds = time.perf_counter() - started
    describe_work(spark, None)
    return result


def validates_while_loading(spark: SparkSession, params: KMeansParams) -> bool:
    """Whether a k-means with these parameters reads its input first in its barrier stage
    (no init job before it), so the input checks can be counted there instead of in a
    separate validation pass over a large table."""
    return choose_engine(spark, params, params.n_clusters, 0) == "barrier"


@dataclass(frozen=True)
class InputCheck:
    """The input's own column names, for the messages of checks counted while loading."""

    id_col: str
    embedding_col: str


def choose_engine(spark: SparkSession, params: KMeansParams, k: int, dim: int) -> str:
    """The requested engine, unless barrier mode cannot run here (then ``passes``).

    The barrier engine's exchange is a reduce-scatter (:mod:`curation_spark.method.reduce`): a
    task receives at most K x (8D + 12) bytes per iteration in total whatever the task
    count, so K alone never forces the fallback any more.
    """
    if params.engine != "barrier":
        return params.engine
    if (spark.conf.get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true":
        log.warning("barrier k-means needs a fixed set of executors (dynamic allocation is on); using engine=passes")
        return "passes"
    if not params.num_partitions and task_slots(spark) is None:
        log.warning("barrier k-means needs to know how many tasks can run at once and this Spark Connect server "
                    "does not say (spark.default.parallelism, spark.master, spark.executor.instances x cores); "
                    "using engine=passes (set clustering.num_partitions to keep the barrier engine)")
        return "passes"
    return "barrier"


def _result_schema(points: DataFrame):
    from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StringType, StructField, StructType

    return StructType([
        StructField("kind", StringType(), False),
        StructField(POINT_ID, points.schema[POINT_ID].dataType, True),
        StructField("cluster_id", IntegerType(), True),
        StructField("distance", FloatType(), True),
        StructField("centroid", ArrayType(FloatType(), False), True),
        StructField("size", LongType(), True),
        StructField("info", StringType(), True),
    ])


def _fit_barrier(points: DataFrame, params: KMeansParams, centroids: np.ndarray | None, dim: int,
                 n_part: int, stage: str, on_block_loaded: Callable[[int], None] | None = None,
                 follow_up: BlockFollowUp | None = None, n_total: int = 0,
                 input_check: InputCheck | None = None) -> KMeansResult:
    import pyarrow as pa
    from pyspark import StorageLevel

    spark = points.sparkSession
    schema = _result_schema(points)
    arrow_schema = pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in schema.fields])
    init_bc = ship(spark, centroids, f"{stage}: the initial centroids")
    k, n_iters, distance, tol = params.n_clusters, params.n_iters, params.distance, params.tol
    from curation_spark.io.session import task_cpus

    threads = task_cpus(spark)
    progress = IterationProgress(stage, n_iters, local=master(spark).startswith("local"))
    # CURATION_SPARK_ITERATION_LOG: a file on a filesystem every executor can write (a shared
    # mount, or one machine) where task 0 appends one JSON line per iteration, with its task
    # attempt id and pid: for watching a long fit on a cluster (and for the executor-loss test).
    progress_path = progress.path or os.environ.get("CURATION_SPARK_ITERATION_LOG") or None
    secret = os.urandom(16)
    index_mode = uses_index(params, k)
    init_rows = 0
    key_seeds = tuple(follow_up.key_seeds) if follow_up is not None else ()
    if centroids is None:  # the init sample is gathered inside the stage
        init_rows = max(params.init_sample_size or default_init_sample_size(k, n_total, dim), k)
        if init_rows < n_total and params.seed not in key_seeds:
            key_seeds = (*key_seeds, params.seed)
    key_names = [f"_key{j}" for j in range(len(key_seeds))]

    def run_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        part = ctx.partitionId()
        log_path = progress_path
        kernels.set_threads(threads)
        t0 = time.perf_counter()
        key_chunks: list[pa.RecordBatch] = []
        if key_names:
            batches = _split_off(batches, key_names, key_chunks)
        checks = BlockChecks() if input_check is not None else None
        ids, x = batches_to_block(batches, dim, checks=checks)
        keys = _aligned_keys(key_chunks, key_seeds)
        load_s = time.perf_counter() - t0
        if on_block_loaded is not None:  # test hook (fault injection); None in production
            on_block_loaded(part)
        group = TaskGroup(ctx, secret)
        try:
            if checks is not None and input_check is not None:
                problem = _judge_checks(group, checks, input_check, dim)
                if problem is not None:  # bad input: one error row, no iteration, no retry
                    if group.rank == 0:
                        yield _info_batch(arrow_schema, "e", problem)
                    return
            init_s = 0.0
            if init_bc.value is None:
                t_i = time.perf_counter()
                c = init_from_blocks(group, ids, x, keys.get(params.seed), params, init_rows, n_total)
                init_s = time.perf_counter() - t_i
            else:
                c = np.array(init_bc.value, dtype=np.float32, copy=True)
            if distance == "cosine":
                x = kernels.normalize_rows(x)
            bounds = reduce.owner_bounds(k, group.size)
            lo, hi = int(bounds[group.rank]), int(bounds[group.rank + 1])
            block = BlockLloyd(x, params, k, group)
            history = []
            for it in range(1, n_iters + 1):
                it_start = time.perf_counter()
                idx, counts, sums, obj, timings = block.step(c)
                t_x = time.perf_counter()
                _, _, owned_sums, owned_counts = reduce.reduce_scatter(group, idx, counts, sums, k, dim)
                owned_new = kernels.update_centroids(owned_sums, owned_counts, c[lo:hi], distance)
                new = reduce.all_gather_rows(group, owned_new, bounds)
                stats = reduce.all_gather_values(group, [obj, load_s if it == 1 else 0.0, *timings,
                                                         float((owned_counts == 0).sum())])
                shift = kernels.centroid_shift(c, new)  # identical on every task: same arrays
                c = new
                if group.rank == 0:
                    entry: dict[str, Any] = {"iteration": it, "objective": float(stats[:, 0].sum()), "shift": shift,
                             "seconds": time.perf_counter() - it_start, "load_s": float(stats[:, 1].max()),
                             "assign_s": float(stats[:, 2].max()), "sums_s": float(stats[:, 3].max()),
                             "exchange_s": time.perf_counter() - t_x, "empty_clusters": int(stats[:, 11].sum()),
                             "assignment": "index" if index_mode else "exact"}
                    if not index_mode or stats[:, 10].any():  # the exact path ran
                        entry["settled"] = settled_shares(stats[:, 7:10].sum(axis=0))
                    if index_mode:
                        entry["agreement"] = float(stats[:, 4].sum() / max(1.0, stats[:, 5].sum()))
                        entry["prior_blocks"] = int(stats[:, 6].sum())
                        entry["exact_blocks"] = int(stats[:, 10].sum())
                        entry["n_probes"] = block.index.n_probes  # type: ignore[union-attr]  # index_mode: it has one
                    history.append(entry)
                    if log_path:
                        try:
                            with open(log_path, "a", encoding="utf-8") as fh:
                                fh.write(json.dumps({**entry, "stage": stage, "task_attempt_id": ctx.taskAttemptId(),
                                                     "pid": os.getpid()}) + "\n")
                        except OSError:  # progress is best effort: never fail the fit for it
                            log_path = None
                if shift == 0.0 or (tol > 0 and shift <= tol):  # shift 0: converged, nothing changes
                    break
            labels, dist = block.assign_final(c)  # exact on every path
            del block
            follow_info = None
            if follow_up is not None:
                labels, dist, c, follow_info = follow_up.run(group, ids, x, labels, dist, c, keys, stage)
                k_out = len(c)
                bounds = reduce.owner_bounds(k_out, group.size)
                lo, hi = int(bounds[group.rank]), int(bounds[group.rank + 1])
            else:
                k_out = k
            out_schema = pa.schema([arrow_schema.field(POINT_ID), ("cluster_id", pa.int32()),
                                    ("distance", pa.float32())])
            null = lambda t, n: pa.nulls(n, type=t)  # noqa: E731  (a local shorthand for the rows below)
            for b in assignment_batches(ids, labels, dist, out_schema):
                n = b.num_rows
                yield pa.RecordBatch.from_arrays(
                    [pa.array(["a"] * n, pa.string()), b.column(0), b.column(1), b.column(2),
                     null(arrow_schema.field("centroid").type, n), null(pa.int64(), n), null(pa.string(), n)],
                    schema=arrow_schema)
            # Final sizes and objective: each task owns the sizes of its cluster range.
            all_counts = np.bincount(labels, minlength=k_out).astype(np.int64)
            final_idx = np.flatnonzero(all_counts).astype(np.int32)
            _, _, _, owned_sizes = reduce.reduce_scatter(group, final_idx, all_counts[final_idx],
                                                         np.zeros((len(final_idx), 0)), k_out, 0)
            final = reduce.all_gather_values(group, [kernels.objective_terms(dist, distance)])
        finally:
            group.close()
        if hi > lo:
            yield pa.RecordBatch.from_arrays(
                [pa.array(["c"] * (hi - lo), pa.string()), pa.nulls(hi - lo, arrow_schema.field(POINT_ID).type),
                 pa.array(np.arange(lo, hi, dtype=np.int32)), pa.nulls(hi - lo, pa.float32()),
                 float_matrix_to_list_array(c[lo:hi]), pa.array(owned_sizes.astype(np.int64)),
                 pa.nulls(hi - lo, pa.string())],
                schema=arrow_schema)
        if group.rank == 0:
            info = json.dumps({"history": history, "final_objective": float(final[:, 0].sum()),
                               "follow_up": follow_info, "init_s": init_s})
            yield _info_batch(arrow_schema, "s", info)

    from pyspark.sql import functions as F

    describe_work(spark, f"{stage} · k-means K={k}, {n_iters} iterations in one barrier stage")
    key_cols = [F.xxhash64(F.col(POINT_ID), F.lit(seed)).alias(name)
                for seed, name in zip(key_seeds, key_names, strict=True)]
    laid_out = layout(points.select(POINT_ID, EMBEDDING, *key_cols), n_part)
    # The shuffle after the barrier stage makes it a ShuffleMapStage: Spark retries a failed
    # barrier map stage as a whole, but cannot recover a failed barrier *result* stage.
    out = (laid_out.mapInArrow(run_partition, schema, barrier=True)  # type: ignore[arg-type]  # Spark passes an iterator
           .repartition(n_part)
           .persist(StorageLevel.MEMORY_AND_DISK))
    with progress:
        small = out.where(F.col("kind") != "a").collect()
    init_bc.unpersist()
    problem = next((r["info"] for r in small if r["kind"] == "e"), None)
    if problem is not None:
        out.unpersist()
        raise InputError(problem)
    cent_rows = sorted((r for r in small if r["kind"] == "c"), key=lambda r: r["cluster_id"])
    stats = json.loads(next(r["info"] for r in small if r["kind"] == "s"))
    final_centroids = np.array([r["centroid"] for r in cent_rows], dtype=np.float32).reshape(len(cent_rows), dim)
    sizes = np.array([r["size"] for r in cent_rows], dtype=np.int64)
    for entry in stats["history"]:
        log_iteration(stage, entry)
    assignments = out.where(F.col("kind") == "a").select(POINT_ID, "cluster_id", "distance")
    return KMeansResult(final_centroids, sizes, float(stats["final_objective"]), assignments, stats["history"],
                        follow_up_info=stats.get("follow_up"), init_seconds=float(stats.get("init_s", 0.0)),
                        backing=out)


def _info_batch(arrow_schema: pa.Schema, kind: str, info: str) -> pa.RecordBatch:
    """One row of the barrier stage's output that carries only ``kind`` and ``info``."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [pa.array([kind]), pa.nulls(1, arrow_schema.field(POINT_ID).type), pa.nulls(1, pa.int32()),
         pa.nulls(1, pa.float32()), pa.nulls(1, arrow_schema.field("centroid").type),
         pa.nulls(1, pa.int64()), pa.array([info])],
        schema=arrow_schema)


def _judge_checks(group: TaskGroup, checks: BlockChecks, input_check: InputCheck, dim: int) -> str | None:
    """All blocks' input checks added up (the same on every task): the validation error's
    message, or None when the input is fine."""
    from curation_spark.io.tables import raise_for_checks

    total = BlockChecks.from_arrays(np.frombuffer(p, dtype=np.int64)
                                    for p in group.all_gather(checks.as_array().tobytes()))
    try:
        raise_for_checks(total, input_check.id_col, input_check.embedding_col, dim)
    except InputError as exc:
        return str(exc)
    return None


def init_from_blocks(group: TaskGroup, ids: Any, x: np.ndarray, key: np.ndarray | None, params: KMeansParams,
                     n_rows: int, n_total: int) -> np.ndarray:
    """The initial centroids from the blocks themselves, the same rows and centroids as the
    init job it replaces, without a pass over the input. Two-level init: spread over the
    tasks (:func:`curation_spark.engine.seeding_stage.two_level_init_in_stage`). Otherwise every
    task sends task 0 its rows under the hash cut of :func:`init_sample` (all rows when
    the sample is the whole input), task 0 keeps the ``n_rows`` smallest
    ``xxhash64(point_id, seed)`` (then id), runs :func:`init_from_sample` on them in id
    order and broadcasts the centroids."""
    import pyarrow as pa

    from curation_spark.method import inprocess

    if init_method(params) == "two_level":
        from curation_spark.engine.seeding_stage import two_level_init_in_stage

        return two_level_init_in_stage(group, ids, x, key, params.n_clusters, params.seed, params.distance, n_rows,
                                       n_total, init_sample_cut(n_rows, n_total))
    everything = n_rows >= n_total
    if everything:
        rows = np.arange(len(x))
    else:
        assert key is not None, "the init sample needs the xxhash64 keys of the init seed"
        rows = np.flatnonzero(key <= np.int64(init_sample_cut(n_rows, n_total)))
    schema = pa.schema([("id", ids.type), ("key", pa.int64()), ("embedding", pa.list_(pa.float32()))])
    batch = pa.RecordBatch.from_arrays(
        [ids.take(pa.array(rows)), pa.array(key[rows] if key is not None else np.zeros(len(rows), np.int64)),
         float_matrix_to_list_array(x[rows])], schema=schema)
    pieces = group.gather(to_ipc(batch))
    payload = None
    if pieces is not None:
        table = from_ipc(pieces, schema).sort_by([("id", "ascending")])
        sample = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        sample = sample.astype(np.float32).reshape(table.num_rows, x.shape[1])
        if not everything:
            sample = sample[inprocess.init_sample_rows(n_rows, n_total, table.column("key").to_numpy())]
        payload = np.ascontiguousarray(init_from_sample(sample, params), dtype=np.float32).tobytes()
    return np.frombuffer(group.broadcast(payload), dtype=np.float32).reshape(-1, x.shape[1]).copy()


def _split_off(batches: Iterator[pa.RecordBatch], names: list[str],
               into: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Pass the batches on without the ``names`` columns, keeping those (and the ids) in
    ``into``: the hash keys a follow-up needs travel with the points, not in the block."""
    import pyarrow as pa

    for batch in batches:
        into.append(pa.RecordBatch.from_arrays(
            [pa.concat_arrays([batch.column(POINT_ID)]), *[pa.concat_arrays([batch.column(n)]) for n in names]],
            names=[POINT_ID, *names]))
        yield batch.select([POINT_ID, EMBEDDING])


def _aligned_keys(chunks: list[pa.RecordBatch], seeds: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The split-off key columns in the block's row order (ascending id, as
    :func:`~curation_spark.io.blocks.batches_to_block` sorts)."""
    if not seeds:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.Table.from_batches(chunks) if chunks else None
    if table is None or table.num_rows == 0:
        return {seed: np.zeros(0, np.int64) for seed in seeds}
    order = pc.sort_indices(table.column(POINT_ID))
    return {seed: table.column(f"_key{j}").take(order).to_numpy() for j, seed in enumerate(seeds)}


def _fit_passes(points: DataFrame, params: KMeansParams, centroids: np.ndarray, dim: int,
                n_part: int, stage: str, n_points: int) -> KMeansResult:
    """One Spark job per iteration over the cached points (no barrier stage needed).

    Each task splits its sparse partial sums by owner range (:mod:`curation_spark.method.reduce`);
    a shuffle by owner brings each range's payloads together and ``applyInPandas`` sums
    them in partition order (deterministic) and computes the range's new centroids. The
    driver receives only the K new centroids and one small statistics row per task; it
    never sees a task's partial sums.
    """
    import pandas as pd
    import pyarrow as pa
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import (
        ArrayType,
        BinaryType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        StructField,
        StructType,
    )

    spark = points.sparkSession
    k, distance = params.n_clusters, params.distance
    from curation_spark.io.session import task_cpus

    threads = task_cpus(spark)
    cached = layout(points.select(POINT_ID, EMBEDDING), n_part).persist(points_storage_level(n_points, dim))
    n_owners = max(1, min(k, n_part))
    bounds = reduce.owner_bounds(k, n_owners)
    partial_schema = StructType([
        StructField("owner", IntegerType(), False), StructField("partition", IntegerType(), False),
        StructField("payload", BinaryType(), False), StructField("objective", DoubleType(), False),
        StructField("assign_s", DoubleType(), False), StructField("sums_s", DoubleType(), False),
        StructField("hits", DoubleType(), False), StructField("rows", DoubleType(), False)])
    centroid_schema = StructType([
        StructField("cluster_id", IntegerType(), False), StructField("centroid", ArrayType(FloatType(), False), False),
        StructField("size", LongType(), False)])
    c = centroids
    history: list[dict[str, Any]] = []
    progress = IterationProgress(stage, params.n_iters, local=False)
    with progress:
        for it in range(1, params.n_iters + 1):
            it_start = time.perf_counter()
            bc = previous = ship(spark, c, f"{stage}: the centroids")

            def partials(batches, bc=bc):
                from pyspark import TaskContext

                kernels.set_threads(threads)
                part = TaskContext.get().partitionId()
                _, x = batches_to_block(batches, dim)
                if distance == "cosine":
                    x = kernels.normalize_rows(x)
                # A fresh block every pass: no previous labels, so the index path probes.
                idx, counts, sums, obj, timings = BlockLloyd(x, params, k).step(bc.value)
                payloads = reduce.split_by_owner(idx, counts, sums, bounds)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(np.arange(n_owners, dtype=np.int32)), pa.array(np.full(n_owners, part, np.int32)),
                     pa.array(payloads, pa.binary()), pa.array(np.full(n_owners, obj)),
                     *[pa.array(np.full(n_owners, t)) for t in timings[:4]]],
                    schema=pa.schema([(f.name, _arrow_type(f.dataType)) for f in partial_schema.fields]))

            def reduce_range(pdf: pd.DataFrame) -> pd.DataFrame:  # one argument: applyInPandas passes no key
                owner = int(pdf["owner"].iloc[0])
                lo, hi = int(bounds[owner]), int(bounds[owner + 1])
                pdf = pdf.sort_values("partition", kind="stable")  # rank order: deterministic sums
                sums, counts = reduce.reduce_owned(list(pdf["payload"]), lo, hi, dim)
                # `previous` is this iteration's: applyInPandas(...).collect() below runs in it. A default
                # argument cannot bind it (applyInPandas would pass the group key to a second one).
                new = kernels.update_centroids(sums, counts, previous.value[lo:hi], distance)  # noqa: B023  (runs within this iteration)
                return pd.DataFrame({"cluster_id": np.arange(lo, hi, dtype=np.int32), "centroid": list(new),
                                     "size": counts})

            describe_work(spark, f"{stage} · iteration {it}")
            parts = cached.mapInArrow(partials, partial_schema).persist(StorageLevel.MEMORY_AND_DISK)
            stats = parts.where(F.col("owner") == 0).drop("payload").collect()
            rows = parts.groupBy("owner").applyInPandas(reduce_range, centroid_schema).collect()
            parts.unpersist()
            t_r = time.perf_counter()
            rows.sort(key=lambda r: r["cluster_id"])
            new = np.array([r["centroid"] for r in rows], dtype=np.float32).reshape(k, dim)
            counts = np.array([r["size"] for r in rows], dtype=np.int64)
            shift = kernels.centroid_shift(c, new)
            c = new
            bc.unpersist()
            entry = {"iteration": it, "objective": float(sum(r["objective"] for r in stats)), "shift": shift,
                     "seconds": time.perf_counter() - it_start, "load_s": 0.0,
                     "assign_s": max(r["assign_s"] for r in stats), "sums_s": max(r["sums_s"] for r in stats),
                     "exchange_s": time.perf_counter() - t_r, "empty_clusters": int((counts == 0).sum()),
                     "assignment": "index" if uses_index(params, k) else "exact"}
            if uses_index(params, k):
                entry["agreement"] = sum(r["hits"] for r in stats) / max(1.0, sum(r["rows"] for r in stats))
            history.append(entry)
            progress.update(entry)
            log_iteration(stage, entry)
            if shift == 0.0 or (params.tol > 0 and shift <= params.tol):
                break
    describe_work(spark, f"{stage} · final assignment")
    assignments = assign_points(cached, c, distance, params=params).persist(StorageLevel.MEMORY_AND_DISK)

    agg = assignments.groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("distance").cast("double")
              * (F.col("distance").cast("double") if distance == "l2" else F.lit(1.0))).alias("o"),
    ).collect()
    sizes = np.zeros(k, dtype=np.int64)
    objective = 0.0
    for r in agg:
        sizes[r["cluster_id"]] = r["n"]
        objective += float(r["o"])
    cached.unpersist()
    return KMeansResult(c, sizes, objective, assignments, history)


def assign_points(points: DataFrame, centroids: np.ndarray, distance: str = "l2",
                  stage: str | None = None, params: KMeansParams | None = None,
                  with_checks: bool = False) -> DataFrame:
    """Nearest-centroid assignment of every point (one pass; centroids broadcast). With
    ``params`` whose assignment mode picks the index (large K), each batch goes through
    the index's probe path; the distance is always exact to the chosen centroid.

    Returns a lazy DataFrame ``point_id, cluster_id, distance``. ``with_checks``: the
    input checks are made in the same pass instead of a validation pass before it: rows
    that cannot be assigned (null embedding, another dimension, NaN/Inf/null values) get a
    null ``cluster_id`` and ``distance``, and two more columns say why and give the norms
    (:func:`checked_assignment_schema`); the caller judges them before using the rows.
    """
    spark = points.sparkSession
    from curation_spark.io.session import task_cpus

    threads = task_cpus(spark)
    schema = checked_assignment_schema(points) if with_checks else assignment_schema(points)
    search = NearestCentroid.prepare(centroids, distance, params)
    # (the coarse quantizer, when the index serves, is trained once here, not in every task)
    bc = ship(spark, (search.centroids, search.coarse), f"{stage or 'assignment'}: the centroids"
              + (" and their index" if search.coarse is not None else ""))
    arrow_id = _arrow_type(schema[POINT_ID].dataType)
    index_params = search.index_params  # (the closures take the settings, the arrays come by broadcast)

    def task_search() -> NearestCentroid:
        kernels.set_threads(threads)
        c, coarse = bc.value
        return NearestCentroid(c, coarse, distance, index_params)

    def run(batches):
        found = task_search()
        for batch in batches:
            yield from found.assigned_batches([batch], arrow_id, with_checks)

    def run_index(batches):
        # The index path checks a sample against exact search: worth it once per partition.
        yield from task_search().assigned_batches(batches, arrow_id, with_checks)

    if stage:
        describe_work(spark, f"{stage} · assign points")
    return points.select(POINT_ID, EMBEDDING).mapInArrow(run if index_params is None else run_index, schema)


class NearestCentroid:
    """The nearest-centroid search of :func:`assign_points`, in a Spark task or in the
    driver (:func:`assign_table`): exact search, or the centroid index's exact-by-bounds
    path when the level's params pick the index (``index_params`` and ``coarse``, the
    coarse centres of :func:`centroid_index.train_coarse`, set)."""

    def __init__(self, centroids: np.ndarray, coarse: np.ndarray | None, distance: str,
                 index_params: KMeansParams | None) -> None:
        self.centroids, self.coarse, self.distance, self.index_params = centroids, coarse, distance, index_params
        self.dim = int(centroids.shape[1])

    @classmethod
    def prepare(cls, centroids: np.ndarray, distance: str, params: KMeansParams | None) -> NearestCentroid:
        """Centroids as float32 (unit rows for cosine) and, when ``params`` pick the index
        for this K, its coarse centres (trained once, shipped to the tasks)."""
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        if distance == "cosine":
            c = kernels.normalize_rows(c)
        index_params = params if params is not None and uses_index(params, len(c)) else None
        coarse = (centroid_index.train_coarse(c, index_params.index_probes, distance, index_params.seed)
                  if index_params is not None else None)
        return cls(c, coarse, distance, index_params)

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(x):  # (a partition of rejected rows only)
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self.distance == "cosine":
            x = kernels.normalize_rows(x)
        if self.index_params is None or self.coarse is None:
            return kernels.assign(x, self.centroids, self.distance)
        return centroid_index.assign_fresh(x, self.centroids, self.coarse, self.distance,
                                           self.index_params.index_probes, self.index_params.index_neighbours)

    def assigned_batches(self, batches: Iterable[pa.RecordBatch], arrow_id: pa.DataType,
                         with_checks: bool) -> Iterator[pa.RecordBatch]:
        """``point_id, cluster_id, distance`` (and ``embedding_dim, norm`` ``with_checks``)
        of ``point_id, embedding`` batches."""
        schema = self.output_schema(arrow_id, with_checks)
        if not with_checks:
            ids, x = batches_to_block(batches, self.dim, sort_by_id=False)
            labels, dist = self.nearest(x)
            yield from assignment_batches(ids.cast(arrow_id), labels, dist, schema)
            return
        block = checked_block(batches, self.dim)
        labels, dist = self.nearest(block.x)
        yield from checked_assignment_batches(block, labels, dist, self.dim, schema)

    @staticmethod
    def output_schema(arrow_id: pa.DataType, with_checks: bool) -> pa.Schema:
        """The Arrow schema of :meth:`assigned_batches`."""
        import pyarrow as pa

        fields = [(POINT_ID, arrow_id), ("cluster_id", pa.int32()), ("distance", pa.float32())]
        return pa.schema(fields + ([(EMBEDDING_DIM, pa.int32()), (NORM, pa.float32())] if with_checks else []))


def assign_table(points: pa.Table, centroids: np.ndarray, distance: str, params: KMeansParams | None,
                 with_checks: bool = False) -> pa.Table:
    """:func:`assign_points` in the driver, for rows already there (a ``point_id, embedding``
    Arrow table): the same search and the same columns, without a Spark job."""
    import pyarrow as pa

    search = NearestCentroid.prepare(centroids, distance, params)
    arrow_id = points.schema.field(POINT_ID).type
    batches = list(search.assigned_batches(points.select([POINT_ID, EMBEDDING]).to_batches(), arrow_id,
                                           with_checks))
    schema = NearestCentroid.output_schema(arrow_id, with_checks)
    return pa.Table.from_batches(batches, schema) if batches else schema.empty_table()


def _arrow_type(dtype):
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(dtype)


