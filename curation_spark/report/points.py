"""The points the figures draw, sampled with Spark: only small things reach the driver.

The ``size`` column of the centroid tables (capped at :data:`MAX_SIZES` per level, a
seeded sample beyond), the curated rows per level-1 cluster (at most
:data:`MAX_CLUSTER_POINTS` clusters) and, for 2-D embeddings, at most :data:`MAX_SCATTER`
points per panel of the scatter. Tables that :mod:`.run_data` collected whole are used as
they are (joined in the driver) instead of querying Spark again.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from curation_spark.errors import CurationError
from curation_spark.report.common import LABEL_COL, SEED
from curation_spark.report.run_data import (
    RunData,
    curated_rows,
    n_clusters,
    read_level_table,
    small_centroids,
    small_curated,
    small_input,
)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

#: At most this many cluster sizes per level reach the driver (a seeded sample beyond).
MAX_SIZES = 2_000_000
#: At most this many points per panel of the 2-D scatter.
MAX_SCATTER = 50_000
#: At most this many level-1 clusters in the curated-per-cluster scatter.
MAX_CLUSTER_POINTS = 200_000


def collect_column(df: DataFrame, col: str, n_rows: int | None, cap: int,
                   seed: int = SEED) -> tuple[np.ndarray, int]:
    """One column as numpy, at most ``cap`` values (a seeded sample beyond); returns (values, total rows)."""
    total = int(df.count()) if n_rows is None else int(n_rows)
    part = df.select(col)
    if total > cap:
        part = part.sample(withReplacement=False, fraction=min(1.0, 1.05 * cap / total), seed=seed).limit(cap)
    values = part.toPandas()[col].to_numpy()
    return values, total


def collect_xy(df: DataFrame, array_col, extra: Sequence[str], n_rows: int | None, cap: int,
               seed: int = SEED) -> tuple[pd.DataFrame, int]:
    """The first two coordinates of an embedding/centroid column (plus ``extra`` columns), sampled to ``cap``."""
    from pyspark.sql import functions as F

    total = int(df.count()) if n_rows is None else int(n_rows)
    part = df
    if total > cap:
        part = part.sample(withReplacement=False, fraction=min(1.0, 1.05 * cap / total), seed=seed).limit(cap)
    part = part.select(F.element_at(array_col, 1).cast("double").alias("x"),
                       F.element_at(array_col, 2).cast("double").alias("y"), *extra)
    return part.toPandas(), total


def level_sizes(ctx: RunData) -> tuple[dict[int, np.ndarray], dict[int, int], list[str]]:
    """Cluster sizes per complete level (a sample beyond :data:`MAX_SIZES`), the levels'
    numbers of clusters, and notes; whole levels are kept in ``ctx.sizes_cache``."""
    sizes: dict[int, np.ndarray] = {}
    totals: dict[int, int] = {}
    notes: list[str] = []
    for level in ctx.levels:
        try:
            small = small_centroids(ctx, level)
            cents = read_level_table(ctx, level, "centroids") if small is None else None
        except CurationError as exc:
            notes.append(f"Level {level}: centroids table missing ({exc}); skipped.")
            continue
        known = n_clusters(ctx, level)
        total: int
        if small is not None:
            values, total = small.column("size").to_numpy(), known  # type: ignore[assignment]  # small implies known
        else:
            values, total = collect_column(cents, "size", known, MAX_SIZES)  # type: ignore[arg-type]  # small is None
        sizes[level] = values.astype(np.int64)
        totals[level] = total
        if total == len(values):
            ctx.sizes_cache[level] = sizes[level]
        if total > len(values):
            notes.append(f"Level {level}: a random sample of {len(values):,} of {total:,} cluster sizes is shown.")
    return sizes, totals, notes


def per_cluster_counts(ctx: RunData) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per level-1 cluster: its size and the curated rows drawn from it (copies count; 0 for
    clusters that give none), at most :data:`MAX_CLUSTER_POINTS` clusters; and notes."""
    from pyspark.sql import functions as F

    small, small_cur = small_centroids(ctx, 1), small_curated(ctx)
    notes = []
    if small is not None and small_cur is not None and len(small) <= MAX_CLUSTER_POINTS:
        # the left join of the level-1 sizes with the curated rows per cluster, in the driver
        cluster_ids = small.column("cluster_id").to_numpy().astype(np.int64)
        size = small.column("size").to_numpy().astype(np.int64)
        got, count = np.unique(small_cur.column("cluster_id").to_numpy().astype(np.int64), return_counts=True)
        order = np.argsort(cluster_ids, kind="stable")
        pos = np.searchsorted(cluster_ids, got, sorter=order)
        hit = pos < len(order)
        hit[hit] = cluster_ids[order[pos[hit]]] == got[hit]
        curated = np.zeros(len(cluster_ids), dtype=np.int64)
        np.add.at(curated, order[pos[hit]], count[hit])
    else:
        cents = read_level_table(ctx, 1, "centroids").select("cluster_id", "size")
        per = ctx.curated.groupBy("cluster_id").agg(F.count(F.lit(1)).alias("curated"))  # type: ignore[union-attr]  # checked by the caller
        joined = cents.join(per, "cluster_id", "left").fillna(0, ["curated"])
        total = n_clusters(ctx, 1)
        n = total if total is not None else int(joined.count())
        part = joined
        if n > MAX_CLUSTER_POINTS:
            part = joined.sample(False, min(1.0, 1.05 * MAX_CLUSTER_POINTS / n), seed=SEED).limit(MAX_CLUSTER_POINTS)
            notes.append(f"A random sample of {MAX_CLUSTER_POINTS:,} of {n:,} level-1 clusters is shown.")
        pdf = part.select("size", "curated").toPandas()
        size, curated = pdf["size"].to_numpy(np.int64), pdf["curated"].to_numpy(np.int64)
    return size, curated, notes


def scatter_points(ctx: RunData) -> tuple[pd.DataFrame | None, dict[int, np.ndarray], pd.DataFrame | None,
                                          list[str]]:
    """The 2-D scatter's points (for ``ctx.dim == 2``): input ``x``, ``y`` (and ``label``),
    centroids of the lowest and the top level, the distinct curated points with their
    ``copies``; each at most :data:`MAX_SCATTER` (a seeded sample beyond), and notes."""
    from pyspark.sql import functions as F

    from curation_spark.io.tables import embedding_array_column

    notes: list[str] = []
    input_pts = None
    emb = None
    if ctx.input_df is None:
        notes.append(ctx.input_note or "No input table: input points are not shown.")
    elif ctx.embedding_col not in ctx.input_df.columns:
        notes.append(f"The input has no embedding column {ctx.embedding_col!r}: input points are not shown.")
    else:
        emb = embedding_array_column(ctx.input_df, ctx.embedding_col)
        extra = [LABEL_COL] if LABEL_COL in ctx.input_df.columns else []
        small_in = small_input(ctx)
        if small_in is not None:  # the whole input, already collected
            input_pts = small_in.select(["x", "y", *extra]).to_pandas()
        else:
            input_pts, total = collect_xy(ctx.input_df, emb, extra, ctx.input_rows, MAX_SCATTER)
            if total > len(input_pts):
                notes.append(f"Input: a random sample of {len(input_pts):,} of {total:,} points.")
    centroids: dict[int, np.ndarray] = {}
    for level in sorted({min(ctx.levels, default=0), max(ctx.levels, default=0)} - {0}):
        try:
            small = small_centroids(ctx, level)
            cents = read_level_table(ctx, level, "centroids") if small is None else None
        except CurationError:
            notes.append(f"Level {level}: centroids table missing.")
            continue
        if small is not None:
            centroids[level] = np.column_stack([small.column("x").to_numpy(), small.column("y").to_numpy()])
            continue
        pdf, total = collect_xy(cents, F.col("centroid"), [], n_clusters(ctx, level), MAX_SCATTER)  # type: ignore[arg-type]  # small is None
        centroids[level] = pdf[["x", "y"]].to_numpy()
        if total > len(pdf):
            notes.append(f"Level {level}: a random sample of {len(pdf):,} of {total:,} centroids.")
    curated_pts = None
    small_in, small_cur = small_input(ctx), small_curated(ctx)
    if ctx.curated is None:
        notes.append(ctx.curated_note or "No curated table.")
    elif emb is not None and small_in is not None and small_cur is not None:
        # copies per curated id, inner-joined with the collected input points
        import pyarrow as pa
        import pyarrow.compute as pc

        counts = pc.value_counts(small_cur.column("id").combine_chunks())
        ids, copies = counts.field("values"), counts.field("counts")
        rows = pc.index_in(ids, value_set=small_in.column("id").combine_chunks())
        found = pc.is_valid(rows)
        picked = small_in.take(pc.filter(rows, found))
        extra = [LABEL_COL] if LABEL_COL in ctx.input_df.columns else []  # type: ignore[union-attr]  # emb is set, so input_df is
        curated_pts = pa.table({"x": picked.column("x"), "y": picked.column("y"),
                                "copies": pc.filter(copies, found).cast(pa.int64()),
                                **{c: picked.column(c) for c in extra}}).to_pandas()
    elif emb is not None:
        copies = ctx.curated.groupBy("id").agg(F.count(F.lit(1)).alias("copies"))
        cols = [F.col(ctx.id_col).alias("id"), emb.alias("_emb")]
        if LABEL_COL in ctx.input_df.columns:  # type: ignore[union-attr]  # emb is set, so input_df is
            cols.append(F.col(LABEL_COL))
        joined = copies.join(ctx.input_df.select(*cols), "id", "inner")  # type: ignore[union-attr]  # emb is set, so input_df is
        extra = ["copies"] + ([LABEL_COL] if LABEL_COL in ctx.input_df.columns else [])  # type: ignore[union-attr]  # input_df is set
        # Distinct curated points <= curated rows: when the rows fit, no count (one job less).
        rows = curated_rows(ctx)
        bound = rows if rows is not None and rows <= MAX_SCATTER else None
        curated_pts, total = collect_xy(joined, F.col("_emb"), extra, bound, MAX_SCATTER)
        total = max(total, len(curated_pts)) if bound is None else len(curated_pts)
        if total > len(curated_pts):
            notes.append(f"Curated: a random sample of {len(curated_pts):,} of {total:,} distinct points.")
    return input_pts, centroids, curated_pts, notes


def dedup_similarities(ctx: RunData, bin_width: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of the removed points' similarity to their kept twin (bin edges, counts):
    one aggregate over the duplicates table, a few dozen numbers to the driver."""
    from pyspark.sql import functions as F

    from curation_spark.io.tables import read_table

    summary = ctx.meta.dedup
    assert summary is not None
    lo = summary.threshold
    n_bins = max(1, int(np.ceil((1.0 - lo) / bin_width - 1e-9)))
    rows = (read_table(ctx.spark, ctx.run.duplicates_path(), ctx.run.format)  # the folder may have moved
            .select(F.least(F.floor((F.col("similarity") - F.lit(lo)) / F.lit(bin_width)), F.lit(n_bins - 1))
                    .cast("int").alias("bin"))
            .groupBy("bin").count().collect())
    counts = np.zeros(n_bins, dtype=np.int64)
    for r in rows:
        counts[max(0, int(r["bin"]))] += int(r["count"])
    return lo + bin_width * np.arange(n_bins + 1), counts
