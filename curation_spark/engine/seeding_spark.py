"""Two-level k-means init with the per-group work on Spark executors.

:func:`two_level_init_spark` is :func:`curation_spark.method.seeding.two_level_init` with the
sample left in Spark:

1. the seeded sample (same rule as :func:`curation_spark.engine.kmeans.init_sample`: the rows
   with the smallest ``xxhash64(point_id, seed)``) stays a DataFrame, persisted for the
   few jobs below;
2. its ``point_id`` column alone comes to the driver, which sorts it (as
   :func:`curation_spark.io.blocks.batches_to_block` does) and picks the coarse sub-sample
   positions exactly as the numpy version does; only those rows' embeddings are gathered
   (``toArrow``, at most 256 per coarse cluster) and the coarse centroids are computed on
   the driver;
3. a ``mapInArrow`` labels every sample row with its coarse cluster (the small coarse
   centroid array travels in the function's closure); one ``groupBy().count()`` gives
   the sizes, from which the driver plans the fine step (:func:`seeding.fine_plan`);
4. with ``allocation="gain"``, a first ``groupBy("coarse").applyInArrow`` returns each
   group's k-means++ gain curve (``upper_c`` floats) and the driver allocates the K
   centres (:func:`seeding.gain_allocation`);
5. a second ``groupBy("coarse").applyInArrow`` runs :func:`seeding.fine_init_group` on
   every group with its count; rows are sorted by ``point_id`` inside the group first.
   The driver collects only the K centroids.

Every group sees the rows the numpy version gives it, in the same (id) order, with the
same generator, so the result equals ``two_level_init(init_sample(...), ...)`` bit for
bit on the same machine. Only DataFrame APIs that Spark Connect also offers are used (no
``sparkContext``, broadcast variables or RDDs).

Driver memory: the sample's ids, the coarse sub-sample (<= 256 sqrt(K) rows), the gain
curves (<= 2 K + 2 sqrt(K) floats) and the K centroids.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curation_spark.io.blocks import batches_to_block, float_matrix_to_list_array
from curation_spark.io.tables import EMBEDDING, POINT_ID
from curation_spark.method import kernels, seeding

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Column holding a sample row's coarse cluster.
COARSE = "coarse"


def sample_frame(points: DataFrame, n_rows: int, n_total: int, seed: int) -> DataFrame:
    """The seeded sample of :func:`curation_spark.engine.kmeans.init_sample` as a DataFrame
    (``point_id``, ``embedding``): the ``n_rows`` rows with the smallest
    ``xxhash64(point_id, seed)``, or every row when ``n_rows >= n_total``."""
    from pyspark.sql import functions as F

    points = points.select(POINT_ID, EMBEDDING)
    if n_rows >= n_total:
        return points
    from curation_spark.method.lloyd import init_sample_cut

    # A 2x margin over the expected count, then exactly the n smallest keys.
    key = F.xxhash64(F.col(POINT_ID), F.lit(seed))
    cut = init_sample_cut(n_rows, n_total)
    return points.withColumn("_k", key).where(F.col("_k") <= F.lit(cut)).orderBy("_k").limit(n_rows).drop("_k")


def two_level_init_spark(points: DataFrame, k: int, n_total: int, dim: int, seed: int, distance: str,
                         sample_size: int, *, coarse_iters: int = seeding.COARSE_ITERS,
                         fine_iters: int = seeding.FINE_ITERS, allocation: str = "gain") -> np.ndarray:
    """Exactly ``k`` initial centroids, (k, dim) float32, by the two-level init on a
    seeded sample of ``max(sample_size, k)`` rows of ``points`` (``point_id``,
    ``embedding``), with the per-coarse-cluster work on the executors.

    Equal, bit for bit, to ``seeding.two_level_init(kmeans.init_sample(points,
    max(sample_size, k), n_total, dim, seed), k, seed, distance, coarse_iters, fine_iters,
    allocation)``. Spark jobs: the sample's ids, the coarse sub-sample, the coarse counts,
    (gain allocation only) the gain curves, and the centroids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql.types import IntegerType, StructField, StructType

    from curation_spark.io.session import task_cpus

    if allocation not in seeding.ALLOCATIONS:
        raise ValueError(f"allocation: unknown value {allocation!r} (choose {' or '.join(seeding.ALLOCATIONS)})")
    seeding.prepare_points(np.zeros((0, 1), np.float32), distance)  # validates distance
    k = int(k)
    seed = int(seed)
    dim = int(dim)
    threads = task_cpus(points.sparkSession)
    size = max(int(sample_size), k)
    sample = sample_frame(points, size, n_total, seed)
    # Persist only a frame of our own: the whole input (size >= n_total) is the caller's
    # to cache, and unpersisting an equal plan would drop the caller's cache.
    owned = size < n_total
    if owned:
        sample = sample.persist()
    try:
        # 1. ids -> sub-sample positions, as in seeding.two_level_init (id order).
        ids = sample.select(POINT_ID).toArrow().column(0).combine_chunks()
        n = len(ids)
        if k < 1 or k > n:
            raise ValueError(f"k must be in [1, {n}] (the sample size), got {k}")
        pos = seeding.subsample_positions(n, k, (seed,))
        if len(pos) == n:
            sub_frame = sample
        else:
            chosen = ids.take(pc.sort_indices(ids).take(pa.array(pos)))
            sub_frame = sample.mapInArrow(_keep_ids(chosen), sample.schema)
        _, sub = batches_to_block(sub_frame.toArrow().to_batches(), dim)
        if len(sub) != len(pos):
            raise RuntimeError(f"coarse sub-sample: gathered {len(sub)} rows, expected {len(pos)} "
                               "(duplicate point_id?)")
        coarse = seeding.coarse_centroids(seeding.prepare_points(sub, distance), k, (seed,), distance, coarse_iters)

        # 2. coarse label of every sample row, sizes, plan.
        labelled_schema = StructType(list(sample.schema.fields) + [StructField(COARSE, IntegerType(), False)])
        labelled = sample.mapInArrow(_label_rows(coarse, dim, distance, threads), labelled_schema)
        counts = labelled.groupBy(COARSE).count().toArrow()
        sizes = np.zeros(len(coarse), dtype=np.int64)
        sizes[counts.column(COARSE).to_numpy()] = counts.column("count").to_numpy()
        if int(sizes.sum()) != n:
            raise RuntimeError(f"coarse counts sum to {int(sizes.sum())}, expected {n}")
        plan = seeding.fine_plan(sizes, k)

        # 3. counts per group (gain curves from the executors, or proportional).
        if allocation == "gain":
            curve_fn = _gain_curves(plan.upper, seed, dim, distance, threads)
            table = labelled.groupBy(COARSE).applyInArrow(curve_fn, f"{COARSE} int, potential array<double>").toArrow()
            groups = table.column(COARSE).to_pylist()
            curves = table.column("potential").to_pylist()
            alloc = seeding.gain_allocation(plan, {int(c): np.asarray(v, dtype=np.float64)
                                                   for c, v in zip(groups, curves, strict=True)}, k)
            uppers = np.where(plan.split, -1, plan.upper).astype(np.int64)
        else:
            alloc = plan.proportional.copy()
            uppers = np.full(len(alloc), -1, dtype=np.int64)

        # 4. the fine k-means of every group; only the k centroids come back.
        final_fn = _fine_groups(alloc, uppers, seed, dim, distance, fine_iters, coarse_iters, allocation, threads)
        out = labelled.groupBy(COARSE).applyInArrow(final_fn,
                                                    f"{COARSE} int, fine int, centroid array<float>").toArrow()
    finally:
        if owned:
            sample.unpersist()
    out = out.sort_by([(COARSE, "ascending"), ("fine", "ascending")])
    if out.num_rows != k:
        raise RuntimeError(f"two-level init returned {out.num_rows} centroids, expected {k}")
    values = out.column("centroid").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(k, dim), dtype=np.float32)


# --------------------------------------------------------------------------- UDFs
# Factories, so each closure captures only the small arrays it needs.


def _keep_ids(chosen):
    import pyarrow.compute as pc

    def keep(batches):
        for batch in batches:
            column = batch.column(POINT_ID)
            values = chosen if chosen.type == column.type else chosen.cast(column.type)
            yield batch.filter(pc.is_in(column, value_set=values))

    return keep


def _label_rows(coarse: np.ndarray, dim: int, distance: str, threads: int):
    import pyarrow as pa

    coarse = np.ascontiguousarray(coarse, dtype=np.float32)

    def label(batches):
        kernels.set_threads(threads)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            _, x = batches_to_block([batch], dim, sort_by_id=False)
            labels = seeding.coarse_labels(seeding.prepare_points(x, distance), coarse, distance)
            yield batch.append_column(COARSE, pa.array(labels.astype(np.int32), type=pa.int32()))

    return label


def _group_rows(table, dim: int) -> np.ndarray:
    """A group's rows as a float32 block in point_id order (whatever the shuffle order)."""
    _, x = batches_to_block(table.to_batches(), dim, sort_by_id=True)
    return x


def _gain_curves(upper: np.ndarray, seed: int, dim: int, distance: str, threads: int):
    import pyarrow as pa

    upper = np.asarray(upper, dtype=np.int64)
    schema = pa.schema([(COARSE, pa.int32()), ("potential", pa.list_(pa.float64()))])

    def curve(key, table):
        c = int(key[0].as_py())
        u = int(upper[c])
        if u == 0:
            return schema.empty_table()
        kernels.set_threads(threads)
        pots = seeding.fine_gain_curve(_group_rows(table, dim), u, seed, c, distance)
        values = pa.ListArray.from_arrays(pa.array([0, len(pots)], type=pa.int32()), pa.array(pots, type=pa.float64()))
        return pa.Table.from_arrays([pa.array([c], type=pa.int32()), values], schema=schema)

    return curve


def _fine_groups(alloc: np.ndarray, uppers: np.ndarray, seed: int, dim: int, distance: str, fine_iters: int,
                 coarse_iters: int, allocation: str, threads: int):
    import pyarrow as pa

    alloc = np.asarray(alloc, dtype=np.int64)
    uppers = np.asarray(uppers, dtype=np.int64)
    schema = pa.schema([(COARSE, pa.int32()), ("fine", pa.int32()), ("centroid", pa.list_(pa.float32()))])

    def fine(key, table):
        c = int(key[0].as_py())
        a = int(alloc[c])
        if a == 0:
            return schema.empty_table()
        kernels.set_threads(threads)
        upper = None if uppers[c] < 0 else int(uppers[c])
        centroids = seeding.fine_init_group(_group_rows(table, dim), a, seed, c, distance, fine_iters, upper=upper,
                                            coarse_iters=coarse_iters, allocation=allocation)
        return pa.Table.from_arrays([pa.array(np.full(a, c, dtype=np.int32)), pa.array(np.arange(a, dtype=np.int32)),
                                     float_matrix_to_list_array(centroids)], schema=schema)

    return fine
