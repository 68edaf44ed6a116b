"""Near-duplicate removal on Spark (``curation-spark dedup``), before the hierarchy is built.

Near-copies distort k-means (a thousand copies of one image become a cluster of their own
and balanced sampling then spends budget on them), so the pool is deduplicated first, in
the SemDeDup way but with no GPU and no bound on cluster sizes:

1. **Coarse k-means** (cosine, the barrier engine) bounds the pairwise work: points are
   compared only with the points of their own cluster and, to catch pairs a cluster
   boundary splits, with those of their next ``probes - 1`` nearest clusters.
2. **Counts** (one pass): how many points each cluster holds and how many probe it, so that
   every cluster is cut into blocks of at most ``block_rows`` points.
3. **Block pairs** (one pass + a shuffle): every point is sent to the (cluster, block,
   block) groups it takes part in; ``groupBy().applyInArrow`` computes the inner products
   of each group in tiles (:func:`curation_spark.method.dedup.pairs_above`) and returns the
   pairs at or above the threshold. A task holds two blocks and one tile, whatever the
   size of the largest cluster.
4. **Keep rule** (:mod:`curation_spark.method.dedup`): the greedy maximal independent set
   in priority order over the pairs found: in the driver when there are at most
   :data:`DRIVER_FINISH_EDGES` pairs (the usual case: pairs are few next to N), else in
   rounds of Spark joins (a point is decided once all its higher-priority neighbours are)
   until the open rest is that small, and the rest in the driver. Same input, config and
   seed: same result.
5. ``<run>/dedup/duplicates``: one row per removed point, ``id``, ``kept_id`` (its most
   similar kept point), ``similarity``.

Nothing O(N) reaches the driver: centroids and per-cluster counts (O(K)), and at most
``DRIVER_FINISH_EDGES`` pairs of the keep rule's remainder.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from curation_spark.engine import kmeans
from curation_spark.errors import InputError
from curation_spark.io.run_metadata import DedupSummary
from curation_spark.io.tables import EMBEDDING, POINT_ID, write_table
from curation_spark.method import dedup as kernels_dedup
from curation_spark.method import seeds
from curation_spark.method.lloyd import KMeansParams

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import DedupConfig

log = logging.getLogger(__name__)

#: ``dedup.n_clusters: null`` gives about this many points per coarse cluster: the pairwise
#: work is N x this (x probes), a few seconds per million points on two cores.
POINTS_PER_CLUSTER = 2000
#: The keep rule's rounds run on Spark until at most this many pairs touch open points;
#: the rest is collected and finished in the driver.
DRIVER_FINISH_EDGES = 2_000_000
#: A safety net only: every round decides at least the highest-priority open point of each
#: connected group, so the rounds end long before this.
MAX_ROUNDS = 10_000

# Sides of a row in a block-pair group.
SAME, LEFT, RIGHT, PROBE = 0, 1, 2, 3


def default_clusters(n_points: int) -> int:
    """Coarse clusters for ``n_points`` points: about :data:`POINTS_PER_CLUSTER` each."""
    return max(1, min(n_points, math.ceil(n_points / POINTS_PER_CLUSTER)))


def check_normalisable(points: DataFrame, norm_min: float | None, embedding_col: str) -> None:
    """Cosine similarity needs a direction: refuse zero vectors, counting them."""
    from pyspark.sql import functions as F

    if norm_min is None or norm_min > 0:
        return
    zero = points.where(~F.exists(EMBEDDING, lambda x: x != 0)).count()
    raise InputError(f"column {embedding_col!r}: {zero} row(s) have an all-zero embedding, which has no direction, "
                     "so cosine similarity (what dedup compares) is undefined for them; remove them from the input "
                     "(or leave the dedup section out)")


def find_duplicates(spark: SparkSession, points: DataFrame, n_points: int, dim: int, cfg: DedupConfig,
                    target: str, fmt: str) -> tuple[DataFrame, DedupSummary]:
    """Run the dedup of ``points`` (``point_id``, ``embedding``) and write the duplicates
    table to ``target``; returns the written table and the summary."""
    started = time.perf_counter()
    phases: dict[str, float] = {}
    k = min(cfg.n_clusters or default_clusters(n_points), n_points)
    params = KMeansParams(n_clusters=k, n_iters=cfg.n_iters, distance="cosine",
                          seed=seeds.derive_seed(cfg.seed, seeds.DEDUP))
    t0 = time.perf_counter()
    fit = kmeans.fit(points, params, stage="dedup · coarse k-means", n_points=n_points, dim=dim)
    centroids = kernels_dedup.unit_rows(fit.centroids)
    fit.unpersist()
    phases["kmeans_s"] = time.perf_counter() - t0
    log.info("dedup: coarse k-means, %d clusters over %d points (%.1f s)", len(centroids), n_points,
             phases["kmeans_s"])

    keyed = points.withColumn("_h", _hash_col(cfg.seed))
    t0 = time.perf_counter()
    homes, probed = _cluster_counts(keyed, centroids, cfg.probes)
    member_blocks = np.maximum(1, -(-homes // cfg.block_rows)).astype(np.int64)
    probe_blocks = (-(-probed // cfg.block_rows)).astype(np.int64)
    phases["counts_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    edges, compared, n_edges = _block_pairs(keyed, centroids, member_blocks, probe_blocks, cfg)
    phases["pairs_s"] = time.perf_counter() - t0
    log.info("dedup: %d pairs compared, %d at similarity >= %.3f (%.1f s)", compared, n_edges, cfg.threshold,
             phases["pairs_s"])

    t0 = time.perf_counter()
    duplicates, rounds, counted = _resolve(spark, edges, n_edges)
    write_table(duplicates, target, fmt)
    from pyspark.sql import functions as F

    from curation_spark.io.tables import read_table

    written = read_table(spark, target, fmt)
    if counted is None:  # resolved in Spark rounds: count the written table (one job)
        row = written.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("kept_id").alias("g")).collect()[0]
        counted = (int(row["n"]), int(row["g"]))
    removed, groups = counted
    edges.unpersist()
    phases["resolve_s"] = time.perf_counter() - t0
    outcome = DedupSummary(points_in=n_points, removed=removed, groups=groups, threshold=cfg.threshold,
                           keep=cfg.keep, n_clusters=len(centroids), probes=cfg.probes, pairs_compared=compared,
                           pairs_found=n_edges, rounds=rounds, seconds=round(time.perf_counter() - started, 2),
                           path=target, phases={k: round(v, 2) for k, v in phases.items()})
    log.info("dedup: removed %d of %d points (%d groups) at similarity >= %.3f, %.1f s", removed, n_points, groups,
             cfg.threshold, outcome.seconds)
    return written, outcome


# --------------------------------------------------------------------------- passes


def _hash_col(seed: int):
    from pyspark.sql import functions as F

    return F.xxhash64(F.col(POINT_ID), F.lit(seeds.derive_seed(seed, seeds.DEDUP_BLOCKS)))


def _top_clusters(x: np.ndarray, centroids: np.ndarray, probes: int) -> tuple[np.ndarray, np.ndarray]:
    """Each unit row's ``probes`` nearest centroids by inner product (column 0: its home)."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    sims, idx = index.search(x, min(probes, len(centroids)))
    return idx.astype(np.int64), sims


def _cluster_counts(keyed: DataFrame, centroids: np.ndarray, probes: int) -> tuple[np.ndarray, np.ndarray]:
    """Points per home cluster and probes per cluster: one pass, O(K) to the driver."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from curation_spark.io.blocks import batches_to_block

    k, dim = len(centroids), centroids.shape[1]

    def count(batches):
        homes = np.zeros(k, dtype=np.int64)
        probed = np.zeros(k, dtype=np.int64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            _, x = batches_to_block([batch.select([POINT_ID, EMBEDDING])], dim)
            top, _ = _top_clusters(kernels_dedup.unit_rows(x), centroids, probes)
            homes += np.bincount(top[:, 0], minlength=k)
            if top.shape[1] > 1:
                probed += np.bincount(top[:, 1:].ravel(), minlength=k)
        nz = np.nonzero(homes + probed)[0]
        yield pa.RecordBatch.from_arrays([pa.array(nz, pa.int32()), pa.array(homes[nz], pa.int64()),
                                          pa.array(probed[nz], pa.int64())], names=["c", "homes", "probed"])

    rows = (keyed.select(POINT_ID, EMBEDDING).mapInArrow(count, "c int, homes long, probed long")
            .groupBy("c").agg(F.sum("homes").alias("homes"), F.sum("probed").alias("probed")).collect())
    homes = np.zeros(k, dtype=np.int64)
    probed = np.zeros(k, dtype=np.int64)
    for r in rows:
        homes[r["c"]], probed[r["c"]] = r["homes"], r["probed"]
    return homes, probed


def group_rows(home_and_probes: np.ndarray, h: np.ndarray, member_blocks: np.ndarray, probe_blocks: np.ndarray
               ) -> tuple[np.ndarray, ...]:
    """The (cluster, a, b, side) groups every point takes part in, as flat arrays with the
    point's row index: ``(row, c, a, b, side)``.

    Cluster c's members are cut into ``member_blocks[c]`` blocks (block = hash mod count),
    its probing points into ``probe_blocks[c]``. Members of blocks i <= j meet in group
    (c, i, j) (SAME when i == j, else LEFT / RIGHT); probe block q meets member block b in
    (c, b, b) when q == b, else in (c, B_c + q, b). Every pair to compare shares exactly one
    group. numpy only, so the rule is tested without Spark.
    """
    n = len(h)
    hh = np.abs(h.astype(np.int64) % (1 << 62))
    out = []
    home = home_and_probes[:, 0]
    nb = member_blocks[home]
    i_blk = hh % nb
    # members x members: one row per block j of the home cluster
    row = np.repeat(np.arange(n), nb)
    j = np.arange(len(row)) - np.repeat(np.cumsum(nb) - nb, nb)
    i_rep = i_blk[row]
    c = home[row]
    a, b = np.minimum(i_rep, j), np.maximum(i_rep, j)
    side = np.where(i_rep == j, SAME, np.where(i_rep < j, LEFT, RIGHT))
    out.append((row, c, a, b, side))
    # members as the RIGHT side of the probe blocks q != i
    qb = probe_blocks[home]
    row2 = np.repeat(np.arange(n), qb)
    q = np.arange(len(row2)) - np.repeat(np.cumsum(qb) - qb, qb)
    keep = q != i_blk[row2]
    row2, q = row2[keep], q[keep]
    c2 = home[row2]
    out.append((row2, c2, member_blocks[c2] + q, i_blk[row2], np.full(len(row2), RIGHT)))
    # probing points: probe block q of each probed cluster, against all of its member blocks
    for rank in range(1, home_and_probes.shape[1]):
        pc = home_and_probes[:, rank]
        q_blk = (hh // 7) % np.maximum(probe_blocks[pc], 1)
        nbp = member_blocks[pc]
        row3 = np.repeat(np.arange(n), nbp)
        bb = np.arange(len(row3)) - np.repeat(np.cumsum(nbp) - nbp, nbp)
        qq = q_blk[row3]
        c3 = pc[row3]
        out.append((row3, c3, np.where(qq == bb, bb, member_blocks[c3] + qq), bb, np.full(len(row3), PROBE)))
    return tuple(np.concatenate([part[f] for part in out]) for f in range(5))


def _block_pairs(keyed: DataFrame, centroids: np.ndarray, member_blocks: np.ndarray, probe_blocks: np.ndarray,
                 cfg: DedupConfig) -> tuple[DataFrame, int, int]:
    """The pairs at or above the threshold, as a persisted frame (a, b, sim, pk_a, pk_b)
    with a < b, the number of pairs compared and the number found."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, IntegerType, LongType, StructField, StructType

    from curation_spark.io.blocks import batches_to_block, float_matrix_to_list_array

    dim = centroids.shape[1]
    id_type = keyed.schema[POINT_ID].dataType
    keep, threshold, probes = cfg.keep, cfg.threshold, cfg.probes
    rank_seed = seeds.derive_seed(cfg.seed, seeds.DEDUP_KEEP)
    grouped_schema = StructType([
        StructField("c", IntegerType(), False), StructField("a", IntegerType(), False),
        StructField("b", IntegerType(), False), StructField("side", IntegerType(), False),
        StructField(POINT_ID, id_type, False), StructField("pk", DoubleType(), False),
        StructField(EMBEDDING, ArrayType(FloatType(), False), False)])

    def emit(batches):
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids, x = batches_to_block([batch.select([POINT_ID, EMBEDDING])], dim)
            order = pc.sort_indices(batch.column(POINT_ID))  # batches_to_block sorts by id
            h = batch.column("_h").take(order).to_numpy()
            xu = kernels_dedup.unit_rows(x)
            top, sims = _top_clusters(xu, centroids, probes)
            if keep == "centroid":  # closest to its cluster's centroid first
                pk = 1.0 - sims[:, 0].astype(np.float64)
            elif keep == "random":
                pk = batch.column("_r").take(order).to_numpy().astype(np.float64)
            else:  # first: by id alone
                pk = np.zeros(len(xu))
            row, c, a, b, side = group_rows(top, h, member_blocks, probe_blocks)
            yield pa.RecordBatch.from_arrays(
                [pa.array(c, pa.int32()), pa.array(a, pa.int32()), pa.array(b, pa.int32()),
                 pa.array(side, pa.int32()), ids.take(pa.array(row)), pa.array(pk[row], pa.float64()),
                 float_matrix_to_list_array(xu[row])], schema=pa.schema(
                    [pa.field(f.name, _arrow(f.dataType), f.nullable) for f in grouped_schema.fields]))

    cols = [POINT_ID, EMBEDDING, "_h"]
    if keep == "random":
        keyed = keyed.withColumn("_r", F.xxhash64(F.col(POINT_ID), F.lit(rank_seed)))
        cols.append("_r")
    rows = keyed.select(*cols).mapInArrow(emit, grouped_schema)

    out_schema = StructType([
        StructField("u", id_type, True), StructField("v", id_type, True), StructField("sim", FloatType(), True),
        StructField("pk_u", DoubleType(), True), StructField("pk_v", DoubleType(), True),
        StructField("pairs", LongType(), True)])
    arrow_out = pa.schema([pa.field(f.name, _arrow(f.dataType), True) for f in out_schema.fields])

    def pairs(table: pa.Table) -> pa.Table:
        side = table.column("side").to_numpy()
        ids = table.column(POINT_ID)
        pk = table.column("pk").to_numpy()
        x = np.asarray(table.column(EMBEDDING).combine_chunks().flatten().to_numpy(zero_copy_only=False),
                       dtype=np.float32).reshape(-1, dim)
        found_u, found_v, found_s = [], [], []
        compared = 0

        def add(left_rows, right_rows):
            nonlocal compared
            if len(left_rows) == 0 or (right_rows is not None and len(right_rows) == 0):
                return
            i, j, s, n = kernels_dedup.pairs_above(x[left_rows], None if right_rows is None else x[right_rows],
                                                   threshold)
            compared += n
            found_u.append(left_rows[i])
            found_v.append((left_rows if right_rows is None else right_rows)[j])
            found_s.append(s)

        same, left, right, probe = (np.nonzero(side == v)[0] for v in (SAME, LEFT, RIGHT, PROBE))
        add(same, None)
        add(left, right)
        add(probe, same if len(same) else right)
        u = np.concatenate(found_u) if found_u else np.zeros(0, np.int64)
        v = np.concatenate(found_v) if found_v else np.zeros(0, np.int64)
        s = np.concatenate(found_s) if found_s else np.zeros(0, np.float32)
        stats = pa.table({"u": pa.nulls(1, ids.type), "v": pa.nulls(1, ids.type), "sim": pa.nulls(1, pa.float32()),
                          "pk_u": pa.nulls(1, pa.float64()), "pk_v": pa.nulls(1, pa.float64()),
                          "pairs": pa.array([compared], pa.int64())}, schema=arrow_out)
        if not len(u):
            return stats
        found = pa.table({"u": ids.take(pa.array(u)), "v": ids.take(pa.array(v)), "sim": pa.array(s, pa.float32()),
                          "pk_u": pa.array(pk[u], pa.float64()), "pk_v": pa.array(pk[v], pa.float64()),
                          "pairs": pa.nulls(len(u), pa.int64())}, schema=arrow_out)
        return pa.concat_tables([found, stats])

    found = rows.groupBy("c", "a", "b").applyInArrow(pairs, out_schema).persist(StorageLevel.MEMORY_AND_DISK)
    compared = int(found.where(F.col("u").isNull()).agg(F.sum("pairs")).collect()[0][0] or 0)
    first = F.col("u") < F.col("v")
    edges = (found.where(F.col("u").isNotNull())
             .select(F.when(first, F.col("u")).otherwise(F.col("v")).alias("a"),
                     F.when(first, F.col("v")).otherwise(F.col("u")).alias("b"),
                     F.when(first, F.col("pk_u")).otherwise(F.col("pk_v")).alias("pk_a"),
                     F.when(first, F.col("pk_v")).otherwise(F.col("pk_u")).alias("pk_b"), "sim")
             # a pair seen from both clusters (each probes the other) is kept once
             .groupBy("a", "b").agg(F.max("sim").alias("sim"), F.first("pk_a").alias("pk_a"),
                                    F.first("pk_b").alias("pk_b"))
             .persist(StorageLevel.MEMORY_AND_DISK))
    n_edges = edges.count()  # materialises the persisted pairs before their source is released
    found.unpersist()
    return edges, compared, n_edges


# --------------------------------------------------------------------------- keep rule


def _resolve(spark: SparkSession, edges: DataFrame, n_edges: int
             ) -> tuple[DataFrame, int, tuple[int, int] | None]:
    """The keep rule over the pairs: ``(duplicates frame (id, kept_id, similarity), rounds,
    (removed, groups) when the driver already knows them)``."""
    from pyspark.sql import functions as F

    id_type = edges.schema["a"].dataType
    empty = spark.createDataFrame([], f"id {id_type.simpleString()}, kept_id {id_type.simpleString()}, "
                                      "similarity float")
    if n_edges == 0:
        return empty, 0, (0, 0)
    if n_edges <= DRIVER_FINISH_EDGES:  # the usual case: the pairs are few next to N
        duplicates, counted = _resolve_in_driver(spark, edges)
        return duplicates, 0, counted
    a_first = (F.col("pk_a") < F.col("pk_b")) | ((F.col("pk_a") == F.col("pk_b")) & (F.col("a") < F.col("b")))
    # higher-priority neighbour of each point: (low, high)
    higher = edges.select(F.when(a_first, F.col("b")).otherwise(F.col("a")).alias("low"),
                          F.when(a_first, F.col("a")).otherwise(F.col("b")).alias("high")).localCheckpoint()
    nodes = (edges.select(F.col("a").alias("id"), F.col("pk_a").alias("pk"))
             .union(edges.select(F.col("b").alias("id"), F.col("pk_b").alias("pk"))).distinct())
    has_higher = higher.select(F.col("low").alias("id")).distinct().withColumn("_h", F.lit(True))
    # round 0: points with no higher-priority neighbour are kept
    status = (nodes.join(has_higher, "id", "left")
              .select("id", "pk", F.when(F.col("_h").isNull(), F.lit(1)).otherwise(F.lit(0)).alias("st"))
              .localCheckpoint())
    rounds = 0
    while True:
        open_ids = status.where(F.col("st") == 0).select("id")
        open_edges = higher.join(open_ids.withColumnRenamed("id", "low"), "low")
        n_open_edges = open_edges.count()
        if n_open_edges == 0:
            break
        if n_open_edges <= DRIVER_FINISH_EDGES:
            status = _finish_in_driver(spark, status, open_edges)
            rounds += 1
            break
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"dedup: the keep rule did not settle in {MAX_ROUNDS} rounds")
        st_high = status.select(F.col("id").alias("high"), F.col("st").alias("st_high"))
        verdict = (open_edges.join(st_high, "high")
                   .groupBy("low").agg(F.max((F.col("st_high") == 1).cast("int")).alias("any_kept"),
                                       F.min((F.col("st_high") == -1).cast("int")).alias("all_removed")))
        status = (status.join(verdict.withColumnRenamed("low", "id"), "id", "left")
                  .select("id", "pk", F.when(F.col("st") != 0, F.col("st"))
                          .when(F.col("any_kept") == 1, F.lit(-1))
                          .when(F.col("all_removed") == 1, F.lit(1)).otherwise(F.lit(0)).alias("st"))
                  .localCheckpoint())
    # each removed point's most similar kept neighbour (either direction of the pair)
    both = edges.select(F.col("a").alias("src"), F.col("b").alias("dst"), "sim").union(
        edges.select(F.col("b").alias("src"), F.col("a").alias("dst"), "sim"))
    removed = status.where(F.col("st") == -1).select(F.col("id").alias("src"))
    kept = status.where(F.col("st") == 1).select(F.col("id").alias("dst"))
    best = (both.join(removed, "src").join(kept, "dst")
            .groupBy("src").agg(F.max(F.struct("sim", "dst")).alias("best")))
    duplicates = best.select(F.col("src").alias("id"), F.col("best.dst").alias("kept_id"),
                             F.col("best.sim").cast("float").alias("similarity"))
    return duplicates, rounds, None


def _resolve_in_driver(spark: SparkSession, edges: DataFrame) -> tuple[DataFrame, tuple[int, int]]:
    """The keep rule on all pairs at once (at most :data:`DRIVER_FINISH_EDGES`) with
    :func:`greedy_keep`; the duplicates go back to Spark as one Arrow table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = edges.select("a", "b", "pk_a", "pk_b", "sim").toArrow()
    ids = pc.unique(pa.concat_arrays([table.column("a").combine_chunks(), table.column("b").combine_chunks()]))
    u = pc.index_in(table.column("a"), value_set=ids).to_numpy().astype(np.int64)
    v = pc.index_in(table.column("b"), value_set=ids).to_numpy().astype(np.int64)
    pk = np.empty(len(ids), dtype=np.float64)
    pk[u], pk[v] = table.column("pk_a").to_numpy(), table.column("pk_b").to_numpy()
    rank = _priority_rank(pk, ids.to_pylist())
    kept, twin, twin_sim = kernels_dedup.greedy_keep(rank, u, v, table.column("sim").to_numpy())
    removed = np.nonzero(~kept)[0]
    id_type = edges.schema["a"].dataType.simpleString()
    out = pa.table({"id": ids.take(pa.array(removed)), "kept_id": ids.take(pa.array(twin[removed])),
                    "similarity": pa.array(twin_sim[removed], pa.float32())})
    groups = len(np.unique(twin[removed]))
    return spark.createDataFrame(out, f"id {id_type}, kept_id {id_type}, similarity float"), (len(removed), groups)


def _finish_in_driver(spark: SparkSession, status: DataFrame, open_edges: DataFrame) -> DataFrame:
    """Decide the open points of a small remainder (at most :data:`DRIVER_FINISH_EDGES`
    pairs) with :func:`greedy_keep` in the driver, around the points already decided."""
    from pyspark.sql import functions as F

    involved = (open_edges.select(F.col("low").alias("id")).union(open_edges.select(F.col("high").alias("id")))
                .distinct().join(status, "id").toArrow())
    pairs = open_edges.select("low", "high").toArrow()
    ids = involved.column("id").to_pylist()
    pos = {v: i for i, v in enumerate(ids)}
    st = involved.column("st").to_numpy()
    u = np.array([pos[v] for v in pairs.column("low").to_pylist()], dtype=np.int64)
    v = np.array([pos[w] for w in pairs.column("high").to_pylist()], dtype=np.int64)
    rank = _priority_rank(involved.column("pk").to_numpy(), ids)
    kept, _, _ = kernels_dedup.greedy_keep(rank, u, v, np.ones(len(u), np.float32), decided=st)
    fresh = [(i, 1 if k else -1) for i, k, s in zip(ids, kept.tolist(), st.tolist(), strict=True) if s == 0]
    decided = spark.createDataFrame(fresh, f"id {status.schema['id'].dataType.simpleString()}, new_st int")
    return (status.join(decided, "id", "left")
            .select("id", "pk", F.coalesce(F.col("new_st"), F.col("st")).alias("st")).localCheckpoint())


def _priority_rank(pk: np.ndarray, ids: list) -> np.ndarray:
    """Ranks in (pk, id) order: the priority order the Spark rounds use, as one number."""
    order = sorted(range(len(ids)), key=lambda i: (pk[i], ids[i]))
    rank = np.empty(len(ids), dtype=np.float64)
    rank[order] = np.arange(len(ids), dtype=np.float64)
    return rank


def _arrow(dtype):
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(dtype)
