"""Distributed k-means on Spark: Lloyd iterations as map-reduce over numpy blocks.

Two engines share the kernels of :mod:`curation_spark.kernels`:

``barrier`` (default)
    One barrier stage. Each task turns its partition into a float32 block **once**, then
    runs all Lloyd iterations in place: assign with faiss, per-cluster float64 partial
    sums, exchange of the (sparse) partial sums between tasks with
    ``BarrierTaskContext.allGather``, identical reduction on every task. Moving the
    embedding column from the JVM to Python costs more than an iteration's GEMM, so it is
    paid once per k-means instead of once per iteration (see README, "k-means engine").
    A failed task fails the barrier stage and Spark retries the whole stage; since every
    step is deterministic the retried result is identical.

``passes``
    The classic loop: the point frame is cached, centroids are broadcast, and each
    iteration is a ``mapInArrow`` job returning one partial-sum payload per partition,
    reduced on the driver. Pays the JVM->Python transfer every iteration; used where
    barrier mode is unavailable (dynamic allocation) or too many partitions/clusters make
    the all-gather heavy.

The driver holds O(K x D): centroids, sizes and per-iteration statistics; assignments
stay distributed.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from curation_spark import kernels
from curation_spark.blocks import assignment_batches, batches_to_block, float_matrix_to_list_array
from curation_spark.exchange import TaskGroup
from curation_spark.progress import IterationProgress
from curation_spark.tables import EMBEDDING, POINT_ID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Largest sample gathered to the driver for k-means++ (bytes of float32 embeddings).
INIT_SAMPLE_MAX_BYTES = 256 * 1024 * 1024
#: Points per cluster in the default k-means++ sample.
INIT_SAMPLE_PER_CLUSTER = 20
#: Above this many bytes per all-gather message the barrier engine is not used.
BARRIER_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Point sets larger than this (float32 embeddings) are cached on disk only.
MEMORY_CACHE_MAX_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class KMeansParams:
    """What one k-means run needs; see ``clustering`` in the config for meanings."""

    n_clusters: int
    n_iters: int
    distance: str = "l2"
    init: str = "auto"
    seed: int = 0
    tol: float = 0.0
    init_sample_size: int | None = None
    engine: str = "barrier"
    num_partitions: int | None = None
    assignment: str = "auto"
    index_min_clusters: int = 4096
    index_neighbours: int = 64
    index_probes: int = 16


@dataclass
class KMeansResult:
    """Centroids and sizes on the driver, assignments as a (persisted) DataFrame."""

    centroids: np.ndarray
    sizes: np.ndarray
    objective: float
    assignments: "DataFrame"
    history: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "barrier"
    n_partitions: int = 0
    seconds: float = 0.0

    def unpersist(self) -> None:
        self.assignments.unpersist()


# --------------------------------------------------------------------------- helpers


def assignment_schema(points: "DataFrame"):
    """Schema of an assignments table (the id keeps the input's type)."""
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    return StructType([
        StructField(POINT_ID, points.schema[POINT_ID].dataType, False),
        StructField("cluster_id", IntegerType(), False),
        StructField("distance", FloatType(), False),
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


def embedding_dim(points: "DataFrame") -> int:
    from pyspark.sql import functions as F

    row = points.select(F.size(EMBEDDING).alias("d")).head(1)
    if not row:
        raise ValueError("cannot cluster an empty table")
    return int(row[0]["d"])


def slots(spark: "SparkSession") -> int:
    from curation_spark.session import default_parallelism, task_cpus

    return max(1, default_parallelism(spark) // task_cpus(spark))


def layout(points: "DataFrame", n_partitions: int) -> "DataFrame":
    """Hash-partition the points by id: the same rows land in the same partition on every
    run, whatever the input's file layout (blocks are id-sorted inside the task)."""
    from pyspark.sql import functions as F

    return points.repartition(n_partitions, F.xxhash64(F.col(POINT_ID)))


def init_sample(points: "DataFrame", n_rows: int, n_total: int, dim: int, seed: int) -> np.ndarray:
    """A seeded sample of about ``n_rows`` points gathered to the driver, independent of
    partitioning: the rows with the smallest ``xxhash64(point_id, seed)``."""
    from pyspark.sql import functions as F

    if n_rows >= n_total:
        frame = points
    else:
        # Keep a 2x margin over the expected count, then take exactly the n smallest keys.
        threshold_fraction = min(1.0, 2.0 * n_rows / n_total + 1e-3)
        key = F.xxhash64(F.col(POINT_ID), F.lit(seed))
        # xxhash64 is uniform over signed 64-bit; keep keys below a quantile of that range.
        cut = int(-(2 ** 63) + threshold_fraction * (2 ** 64 - 1))
        cut = min(cut, 2 ** 63 - 1)
        frame = points.withColumn("_k", key).where(F.col("_k") <= F.lit(cut)).orderBy("_k").limit(n_rows).drop("_k")
    table = frame.select(POINT_ID, EMBEDDING).toArrow()
    _, x = batches_to_block(table.to_batches(), dim)
    return x


def default_init_sample_size(n_clusters: int, n_total: int, dim: int) -> int:
    """k-means++ sample bound: 20 points per cluster (at least 10,000), at most 256 MB."""
    wanted = max(INIT_SAMPLE_PER_CLUSTER * n_clusters, 10_000)
    return int(min(n_total, wanted, max(n_clusters, INIT_SAMPLE_MAX_BYTES // (4 * dim))))


def initial_centroids(points: "DataFrame", params: KMeansParams, n_total: int, dim: int) -> np.ndarray:
    """k-means++ (greedy, 2 + ln K trials) or random rows, on a bounded driver-side sample."""
    size = params.init_sample_size or default_init_sample_size(params.n_clusters, n_total, dim)
    size = max(size, params.n_clusters)
    sample = init_sample(points, size, n_total, dim, params.seed)
    return init_from_sample(sample, params)


def init_from_sample(sample: np.ndarray, params: KMeansParams) -> np.ndarray:
    """The initial centroids from an (id-ordered) in-memory sample: the numeric half of
    :func:`initial_centroids`, shared with the in-process path for small levels."""
    if params.distance == "cosine":
        sample = kernels.normalize_rows(sample)
    rng = np.random.default_rng([params.seed, 0x5EED])
    k = min(params.n_clusters, len(sample))
    if params.init == "random":
        return kernels.random_init(sample, k, rng)
    # TODO(two-level init): "two_level", and "auto" above a K threshold.
    return kernels.kmeans_plus_plus(sample, k, rng)


# --------------------------------------------------------------------------- messages


def encode_partials(sums: np.ndarray, counts: np.ndarray, objective: float, timings: list[float]) -> bytes:
    """Sparse binary form of one block's partial sums (only non-empty clusters)."""
    idx = np.flatnonzero(counts).astype(np.int32)
    header = struct.pack("<iid", len(idx), sums.shape[1], objective) + struct.pack("<4d", *timings[:4])
    return header + idx.tobytes() + counts[idx].astype(np.int64).tobytes() + np.ascontiguousarray(sums[idx]).tobytes()


def decode_partials(payload: bytes, n_clusters: int) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    m, d, objective = struct.unpack_from("<iid", payload, 0)
    timings = list(struct.unpack_from("<4d", payload, 16))
    off = 48
    idx = np.frombuffer(payload, dtype=np.int32, count=m, offset=off)
    off += 4 * m
    cnt = np.frombuffer(payload, dtype=np.int64, count=m, offset=off)
    off += 8 * m
    sm = np.frombuffer(payload, dtype=np.float64, count=m * d, offset=off).reshape(m, d)
    sums = np.zeros((n_clusters, d), dtype=np.float64)
    counts = np.zeros(n_clusters, dtype=np.int64)
    sums[idx] = sm
    counts[idx] = cnt
    return sums, counts, objective, timings


def reduce_partials(payloads: list[bytes], n_clusters: int) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    """Sum partial payloads in the given (partition) order: deterministic float64 sums."""
    total_sums = None
    total_counts = np.zeros(n_clusters, dtype=np.int64)
    objective = 0.0
    slowest = [0.0, 0.0, 0.0, 0.0]
    for payload in payloads:
        sums, counts, obj, timings = decode_partials(payload, n_clusters)
        total_sums = sums if total_sums is None else total_sums + sums
        total_counts += counts
        objective += obj
        slowest = [max(a, b) for a, b in zip(slowest, timings)]
    assert total_sums is not None
    return total_sums, total_counts, objective, slowest


def _block_iteration(x: np.ndarray, centroids: np.ndarray, k: int, distance: str, load_s: float) -> bytes:
    t0 = time.perf_counter()
    labels, dist = kernels.assign(x, centroids, distance)
    t1 = time.perf_counter()
    sums, counts = kernels.partial_sums(x, labels, k)
    obj = kernels.objective_terms(dist, distance)
    t2 = time.perf_counter()
    return encode_partials(sums, counts, obj, [load_s, t1 - t0, t2 - t1, 0.0])


# --------------------------------------------------------------------------- engines


def fit(points: "DataFrame", params: KMeansParams, *, stage: str = "k-means",
        init_centroids: np.ndarray | None = None, n_points: int | None = None,
        dim: int | None = None) -> KMeansResult:
    """Run k-means on a ``point_id``/``embedding`` frame.

    Parameters
    ----------
    points
        Normalised point frame (see :func:`curation_spark.tables.to_points`).
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
    spark.sparkContext.setJobDescription(f"{stage} · k-means init ({params.init})")
    if init_centroids is None:
        centroids = initial_centroids(points, params, n_total, dim)
    else:
        centroids = np.ascontiguousarray(init_centroids, dtype=np.float32)
        if params.distance == "cosine":
            centroids = kernels.normalize_rows(centroids)
    if len(centroids) != k:
        raise ValueError(f"{stage}: expected {k} initial centroids, got {len(centroids)}")
    engine = choose_engine(spark, params, k, dim)
    n_part = min(params.num_partitions or slots(spark), slots(spark)) if engine == "barrier" else (
        params.num_partitions or slots(spark))
    if engine == "barrier":
        result = _fit_barrier(points, params, centroids, dim, n_part, stage)
    else:
        result = _fit_passes(points, params, centroids, dim, n_part, stage, n_total)
    result.engine = engine
    result.n_partitions = n_part
    result.seconds = time.perf_counter() - started
    spark.sparkContext.setJobDescription(None)
    return result


def choose_engine(spark: "SparkSession", params: KMeansParams, k: int, dim: int) -> str:
    """The requested engine, unless barrier mode cannot run here (then ``passes``)."""
    if params.engine != "barrier":
        return params.engine
    if (spark.conf.get("spark.dynamicAllocation.enabled", "false") or "false").lower() == "true":
        log.warning("barrier k-means needs a fixed set of executors (dynamic allocation is on); using engine=passes")
        return "passes"
    message = k * (dim * 8 + 12)
    if message * slots(spark) > BARRIER_MAX_MESSAGE_BYTES * 4 or message > BARRIER_MAX_MESSAGE_BYTES:
        log.warning("barrier k-means would exchange %.0f MB per iteration (K=%d, D=%d, %d tasks); using engine=passes",
                    message * slots(spark) / 1e6, k, dim, slots(spark))
        return "passes"
    return "barrier"


def _result_schema(points: "DataFrame"):
    from pyspark.sql.types import (ArrayType, FloatType, IntegerType, LongType, StringType, StructField,
                                   StructType)

    return StructType([
        StructField("kind", StringType(), False),
        StructField(POINT_ID, points.schema[POINT_ID].dataType, True),
        StructField("cluster_id", IntegerType(), True),
        StructField("distance", FloatType(), True),
        StructField("centroid", ArrayType(FloatType(), False), True),
        StructField("size", LongType(), True),
        StructField("info", StringType(), True),
    ])


def _fit_barrier(points: "DataFrame", params: KMeansParams, centroids: np.ndarray, dim: int,
                 n_part: int, stage: str) -> KMeansResult:
    import pyarrow as pa
    from pyspark import StorageLevel

    spark = points.sparkSession
    sc = spark.sparkContext
    schema = _result_schema(points)
    arrow_schema = pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in schema.fields])
    init_bc = sc.broadcast(centroids)
    k, n_iters, distance, tol = params.n_clusters, params.n_iters, params.distance, params.tol
    from curation_spark.session import task_cpus

    threads = task_cpus(spark)
    progress = IterationProgress(stage, n_iters, local=sc.master.startswith("local"))
    # CURATION_SPARK_ITERATION_LOG: a file on a filesystem every executor can write (a shared
    # mount, or one machine) where task 0 appends one JSON line per iteration, with its task
    # attempt id and pid: for watching a long fit on a cluster (and for the executor-loss test).
    progress_path = progress.path or os.environ.get("CURATION_SPARK_ITERATION_LOG") or None
    inject = os.environ.get("CURATION_SPARK_FAIL_FIRST_ATTEMPT", "")
    secret = os.urandom(16)
    inject_marker = None
    if "kmeans" in inject.split(","):
        import tempfile

        inject_marker = os.path.join(tempfile.gettempdir(), f"curation-inject-{secret.hex()}")

    def run_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        part = ctx.partitionId()
        log_path = progress_path
        kernels.set_threads(threads)
        t0 = time.perf_counter()
        ids, x = batches_to_block(batches, dim)
        if distance == "cosine":
            x = kernels.normalize_rows(x)
        load_s = time.perf_counter() - t0
        # Test-only fault injection (off unless the variable is set): the first task to get
        # here fails once per job, marked by a file only one attempt can create.
        if inject_marker and part == 0:
            try:
                os.close(os.open(inject_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                raise RuntimeError("injected failure (CURATION_SPARK_FAIL_FIRST_ATTEMPT=kmeans)")
            except FileExistsError:
                pass
        c = np.array(init_bc.value, dtype=np.float32, copy=True)
        group = TaskGroup(ctx, secret)
        history = []
        try:
            for it in range(1, n_iters + 1):
                it_start = time.perf_counter()
                payload = _block_iteration(x, c, k, distance, load_s if it == 1 else 0.0)
                t_g = time.perf_counter()
                gathered = group.gather(payload)
                message = None
                if gathered is not None:  # task 0 reduces in rank order: deterministic sums
                    sums, counts, obj, slowest = reduce_partials(gathered, k)
                    new = kernels.update_centroids(sums, counts, c, distance)
                    shift = kernels.centroid_shift(c, new)
                    entry = {"iteration": it, "objective": obj, "shift": shift,
                             "seconds": time.perf_counter() - it_start, "load_s": slowest[0],
                             "assign_s": slowest[1], "sums_s": slowest[2],
                             "exchange_s": time.perf_counter() - t_g, "empty_clusters": int((counts == 0).sum())}
                    history.append(entry)
                    if log_path:
                        try:
                            with open(log_path, "a", encoding="utf-8") as fh:
                                fh.write(json.dumps({**entry, "stage": stage, "task_attempt_id": ctx.taskAttemptId(),
                                                     "pid": os.getpid()}) + "\n")
                        except OSError:  # progress is best effort: never fail the fit for it
                            log_path = None
                    stop = shift == 0.0 or (tol > 0 and shift <= tol)  # shift 0: converged, nothing changes
                    message = struct.pack("<?", stop) + new.tobytes()
                message = group.broadcast(message)
                stop = struct.unpack_from("<?", message, 0)[0]
                c = np.frombuffer(message, dtype=np.float32, offset=1).reshape(k, dim).copy()
                if stop:
                    break
            labels, dist = kernels.assign(x, c, distance)
            out_schema = pa.schema([arrow_schema.field(POINT_ID), ("cluster_id", pa.int32()), ("distance", pa.float32())])
            null = lambda t, n: pa.nulls(n, type=t)  # noqa: E731
            for b in assignment_batches(ids, labels, dist, out_schema):
                n = b.num_rows
                yield pa.RecordBatch.from_arrays(
                    [pa.array(["a"] * n, pa.string()), b.column(0), b.column(1), b.column(2),
                     null(arrow_schema.field("centroid").type, n), null(pa.int64(), n), null(pa.string(), n)],
                    schema=arrow_schema)
            # Final sizes and objective need every block's counts: one last gather.
            counts_local = np.bincount(labels, minlength=k).astype(np.int64) if len(labels) else np.zeros(k, np.int64)
            obj_local = kernels.objective_terms(dist, distance)
            gathered = group.gather(struct.pack("<d", obj_local) + counts_local.tobytes())
        finally:
            group.close()
        if gathered is not None:
            sizes = np.zeros(k, dtype=np.int64)
            final_obj = 0.0
            for raw in gathered:
                final_obj += struct.unpack_from("<d", raw, 0)[0]
                sizes += np.frombuffer(raw, dtype=np.int64, offset=8)
            yield pa.RecordBatch.from_arrays(
                [pa.array(["c"] * k, pa.string()), pa.nulls(k, arrow_schema.field(POINT_ID).type),
                 pa.array(np.arange(k, dtype=np.int32)), pa.nulls(k, pa.float32()),
                 float_matrix_to_list_array(c), pa.array(sizes), pa.nulls(k, pa.string())],
                schema=arrow_schema)
            info = json.dumps({"history": history, "final_objective": final_obj})
            yield pa.RecordBatch.from_arrays(
                [pa.array(["s"]), pa.nulls(1, arrow_schema.field(POINT_ID).type), pa.nulls(1, pa.int32()),
                 pa.nulls(1, pa.float32()), pa.nulls(1, arrow_schema.field("centroid").type),
                 pa.nulls(1, pa.int64()), pa.array([info])],
                schema=arrow_schema)

    from pyspark.sql import functions as F

    sc.setJobDescription(f"{stage} · k-means K={k}, {n_iters} iterations in one barrier stage")
    laid_out = layout(points.select(POINT_ID, EMBEDDING), n_part)
    # The shuffle after the barrier stage makes it a ShuffleMapStage: Spark retries a failed
    # barrier map stage as a whole, but cannot recover a failed barrier *result* stage.
    out = (laid_out.mapInArrow(run_partition, schema, barrier=True).repartition(n_part)
           .persist(StorageLevel.MEMORY_AND_DISK))
    with progress:
        small = out.where(F.col("kind") != "a").collect()
    init_bc.unpersist()
    cent_rows = sorted((r for r in small if r["kind"] == "c"), key=lambda r: r["cluster_id"])
    stats = json.loads(next(r["info"] for r in small if r["kind"] == "s"))
    final_centroids = np.array([r["centroid"] for r in cent_rows], dtype=np.float32).reshape(k, dim)
    sizes = np.array([r["size"] for r in cent_rows], dtype=np.int64)
    for entry in stats["history"]:
        log_iteration(stage, entry)
    assignments = out.where(F.col("kind") == "a").select(POINT_ID, "cluster_id", "distance")
    result = KMeansResult(final_centroids, sizes, float(stats["final_objective"]), assignments, stats["history"])
    result.assignments = _AssignmentsHandle.wrap(assignments, out)
    return result


def _fit_passes(points: "DataFrame", params: KMeansParams, centroids: np.ndarray, dim: int,
                n_part: int, stage: str, n_points: int) -> KMeansResult:
    import pyarrow as pa
    from pyspark import StorageLevel
    from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

    spark = points.sparkSession
    sc = spark.sparkContext
    k, distance = params.n_clusters, params.distance
    from curation_spark.session import task_cpus

    threads = task_cpus(spark)
    cached = layout(points.select(POINT_ID, EMBEDDING), n_part).persist(points_storage_level(n_points, dim))
    partial_schema = StructType([StructField("partition", IntegerType(), False), StructField("payload", BinaryType(), False)])
    c = centroids
    history: list[dict[str, Any]] = []
    progress = IterationProgress(stage, params.n_iters, local=False)
    with progress:
        for it in range(1, params.n_iters + 1):
            it_start = time.perf_counter()
            bc = sc.broadcast(c)

            def partials(batches, bc=bc):
                from pyspark import TaskContext

                kernels.set_threads(threads)
                t0 = time.perf_counter()
                _, x = batches_to_block(batches, dim)
                if distance == "cosine":
                    x = kernels.normalize_rows(x)
                payload = _block_iteration(x, bc.value, k, distance, time.perf_counter() - t0)
                yield pa.RecordBatch.from_arrays(
                    [pa.array([TaskContext.get().partitionId()], pa.int32()), pa.array([payload], pa.binary())],
                    names=["partition", "payload"])

            sc.setJobDescription(f"{stage} · iteration {it}")
            rows = sorted(cached.mapInArrow(partials, partial_schema).collect(), key=lambda r: r["partition"])
            sums, counts, obj, slowest = reduce_partials([bytes(r["payload"]) for r in rows], k)
            t_r = time.perf_counter()
            new = kernels.update_centroids(sums, counts, c, distance)
            shift = kernels.centroid_shift(c, new)
            c = new
            bc.unpersist()
            entry = {"iteration": it, "objective": obj, "shift": shift, "seconds": time.perf_counter() - it_start,
                     "load_s": slowest[0], "assign_s": slowest[1], "sums_s": slowest[2],
                     "exchange_s": time.perf_counter() - t_r, "empty_clusters": int((counts == 0).sum())}
            history.append(entry)
            progress.update(entry)
            log_iteration(stage, entry)
            if shift == 0.0 or (params.tol > 0 and shift <= params.tol):
                break
    sc.setJobDescription(f"{stage} · final assignment")
    assignments = assign_points(cached, c, distance).persist(StorageLevel.MEMORY_AND_DISK)
    from pyspark.sql import functions as F

    agg = assignments.groupBy("cluster_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("distance").cast("double") * (F.col("distance").cast("double") if distance == "l2" else F.lit(1.0))).alias("o"),
    ).collect()
    sizes = np.zeros(k, dtype=np.int64)
    objective = 0.0
    for r in agg:
        sizes[r["cluster_id"]] = r["n"]
        objective += float(r["o"])
    cached.unpersist()
    return KMeansResult(c, sizes, objective, assignments, history)


def assign_points(points: "DataFrame", centroids: np.ndarray, distance: str = "l2",
                  stage: str | None = None) -> "DataFrame":
    """Nearest-centroid assignment of every point (one pass; centroids broadcast).

    Returns a lazy DataFrame ``point_id, cluster_id, distance``.
    """
    import pyarrow as pa

    spark = points.sparkSession
    from curation_spark.session import task_cpus

    threads = task_cpus(spark)
    dim = int(centroids.shape[1])
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if distance == "cosine":
        c = kernels.normalize_rows(c)
    bc = spark.sparkContext.broadcast(c)
    schema = assignment_schema(points)
    arrow_id = _arrow_type(schema[POINT_ID].dataType)
    out_schema = pa.schema([(POINT_ID, arrow_id), ("cluster_id", pa.int32()), ("distance", pa.float32())])

    def run(batches):
        kernels.set_threads(threads)
        for batch in batches:
            ids, x = batches_to_block([batch], dim, sort_by_id=False)
            if distance == "cosine":
                x = kernels.normalize_rows(x)
            labels, dist = kernels.assign(x, bc.value, distance)
            yield from assignment_batches(ids.cast(arrow_id), labels, dist, out_schema)

    if stage:
        spark.sparkContext.setJobDescription(f"{stage} · assign points")
    return points.select(POINT_ID, EMBEDDING).mapInArrow(run, schema)


def log_iteration(stage: str, entry: dict[str, Any]) -> None:
    # Resampling runs many small k-means; their iterations go to DEBUG to keep logs readable.
    level = logging.DEBUG if "resampling" in stage else logging.INFO
    log.log(level, "%s · iteration %d: objective=%.6g shift=%.3g seconds=%.2f (assign %.2f, sums %.2f, exchange %.2f)",
             stage, entry["iteration"], entry["objective"], entry["shift"], entry["seconds"],
             entry["assign_s"], entry["sums_s"], entry["exchange_s"])


def _arrow_type(dtype):
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(dtype)


class _AssignmentsHandle:
    """Keeps the persisted barrier output alive behind the filtered assignments frame."""

    @staticmethod
    def wrap(assignments: "DataFrame", backing: "DataFrame") -> "DataFrame":
        original = assignments.unpersist

        def unpersist(blocking: bool = False):
            backing.unpersist(blocking)
            return original(blocking)

        assignments.unpersist = unpersist  # type: ignore[method-assign]
        return assignments


def clamp_clusters(requested: int, available: int, stage: str) -> int:
    """K larger than the points available is clamped with a warning (as the reference does)."""
    if requested > available:
        log.warning("%s: n_clusters=%d is more than the %d points available; using %d clusters", stage, requested,
                    available, available)
        return available
    return requested
