"""What a run folder holds, read into the numbers the report shows.

Everything that reads ``run.json`` is here: which levels are complete, which curated table
the report describes and the input it is compared with (:func:`open_run_data`), the level
tables, the tables small enough to collect whole, the label counts, and the per-level
numbers of the tables and figures (the accessors at the end). The other modules get plain
values from here.

Tables that are small as a whole (at most :data:`SMALL_TABLE_ROWS` rows by run.json's
counts: the toy demo's input, centroids and curated set) are collected once and shared by
the sections, which then count and join them in the driver instead of each querying Spark.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from curation_spark.errors import ConfigError, CurationError
from curation_spark.io import paths
from curation_spark.io.run_metadata import LevelStats, RunMetadata, SampleSummary
from curation_spark.io.runfolder import RunFolder
from curation_spark.method.balance import label_entropy
from curation_spark.report.common import LABEL_COL, sorted_keys

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import InputConfig

log = logging.getLogger("curation_spark.report")

#: Label columns with more distinct values than this are not compared (an id, not a label).
MAX_LABELS = 100_000
#: Above this many labelled rows the entropy is computed from the counts directly.
MAX_ENTROPY_EXPAND = 5_000_000
#: Tables of at most this many rows (run.json's counts) are collected once, whole, and
#: shared by the sections that read them, instead of one Spark query per section.
SMALL_TABLE_ROWS = 50_000


@dataclass
class RunData:
    """What the report knows about one run folder, opened once and shared by the sections:
    run.json, the curated table and the input (Spark frames), and what was collected so far
    (``small``: tables small enough to collect whole, ``sizes_cache``, ``label_info``)."""

    spark: SparkSession
    run: RunFolder
    out_dir: str
    levels: list[int]
    id_col: str = "id"
    embedding_col: str = "embedding"
    curated_name: str | None = None
    curated_path: str | None = None
    curated: DataFrame | None = None
    curated_summary: SampleSummary | None = None
    curated_note: str | None = None
    input_df: DataFrame | None = None
    input_desc: str | None = None
    input_note: str | None = None
    input_rows: int | None = None
    dim: int | None = None
    label_info: dict[str, Any] = field(default_factory=dict)
    sizes_cache: dict[int, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    small: dict[Any, Any] = field(default_factory=dict)

    @property
    def meta(self) -> RunMetadata:
        return self.run.metadata  # type: ignore[return-value]  # open_existing loaded it

    def level_stats(self, level: int) -> LevelStats:
        return self.meta.levels[level]


def open_run_data(spark: SparkSession, run: RunFolder, table: str | None, input_path: str | None,
                  out_dir: str) -> RunData:
    meta = run.metadata
    if meta is None:
        raise ConfigError(f"--run: {run.path} is not a curation-spark run folder (no run.json)")
    levels = sorted(level for level, stats in meta.levels.items() if stats.complete)
    in_cfg = meta.config.input
    ctx = RunData(spark=spark, run=run, out_dir=out_dir, levels=levels, id_col=in_cfg.id_col,
                  embedding_col=in_cfg.embedding_col)
    expected = meta.config.clustering.n_levels
    if not levels:
        ctx.notes.append("No level of the hierarchy is complete in run.json; the level figures are skipped.")
    elif len(levels) < expected:
        ctx.notes.append(f"Only {len(levels)} of {expected} levels are complete (an interrupted run?).")
    ctx.dim = meta.input.dim
    _choose_curated(ctx, table)
    _open_input(ctx, input_path, in_cfg, meta.input.n_rows)
    if ctx.dim is None and levels:
        ctx.dim = _centroid_dim(ctx)
    return ctx


def _choose_curated(ctx: RunData, table: str | None) -> None:
    """``table`` if given (an error if it does not exist), else the newest curated table."""
    from curation_spark.io.tables import read_table, table_exists

    spark, run = ctx.spark, ctx.run
    samples = ctx.meta.samples
    if table:
        if table in samples:
            name, path = table, samples[table].path or run.table_path(table)
        elif "/" not in table and "\\" not in table and ":" not in table:
            name, path = table, run.table_path(table)
        else:
            name, path = table.rstrip("/").rsplit("/", 1)[-1], table
        fmt = run.format if paths.is_same_or_inside(path, run.path) else "auto"
        if not paths.exists(spark, path) or (fmt != "auto" and not table_exists(spark, path, fmt)):
            known = ", ".join(samples) or "none"
            raise ConfigError(f"--table: {table} is not a table of run folder {run.path} "
                              f"(curated tables in run.json: {known})")
        ctx.curated_name, ctx.curated_path = name, path
        ctx.curated_summary = samples.get(name)
    else:
        candidates = []
        for order, (name, summary) in enumerate(samples.items()):
            path = summary.path or run.table_path(name)
            if table_exists(spark, path, run.format):
                candidates.append((_mtime(spark, path), order, name, path, summary))
            else:
                ctx.notes.append(f"Curated table {name!r} listed in run.json is missing at {path}.")
        if not candidates:
            ctx.curated_note = ("No curated table in this run folder (run.json has no usable \"samples\" entry); "
                                "run `curation-spark sample` first. Figures of the curated set are skipped.")
            return
        candidates.sort(key=lambda c: (c[0] if c[0] is not None else -1.0, c[1]))
        _, _, ctx.curated_name, ctx.curated_path, ctx.curated_summary = candidates[-1]
        if len(candidates) > 1:
            others = ", ".join(c[2] for c in candidates[:-1])
            ctx.notes.append(f"Describing the most recently written curated table {ctx.curated_name!r} "
                             f"(also in this run: {others}; choose one with table=/--table).")
    fmt = run.format if paths.is_same_or_inside(ctx.curated_path, run.path) else "auto"
    try:
        ctx.curated = read_table(spark, ctx.curated_path, fmt)
    except CurationError as exc:
        ctx.curated, ctx.curated_note = None, f"Curated table {ctx.curated_name!r} could not be read: {exc}"
        return
    missing = [c for c in ("id", "cluster_id") if c not in ctx.curated.columns]
    if missing:
        ctx.curated_note = (f"Curated table {ctx.curated_path} has no column {missing[0]!r} "
                            f"(columns: {', '.join(ctx.curated.columns)}); figures of the curated set are skipped.")
        ctx.curated = None


def _mtime(spark: SparkSession, path: str) -> float | None:
    """Newest modification time under a table (its folder, ``_SUCCESS``, ``_delta_log``).

    run.json's "samples" keeps the insertion order of names, so a table that was sampled
    again keeps its old position; the file system knows which one was written last.
    """
    try:
        return paths.newest_mtime(spark, path, ("_SUCCESS", "_delta_log"))
    except Exception as exc:  # only the order of the report's tables depends on it
        log.debug("report: modification time of %s failed (%s)", path, exc)
        return None


def _open_input(ctx: RunData, input_path: str | None, in_cfg: InputConfig, recorded_rows: int | None) -> None:
    """The input table (``input_path`` or the run's own input), or a note why there is none."""
    from curation_spark.io.tables import read_input, read_table

    spark = ctx.spark
    try:
        if input_path:
            ctx.input_df = read_table(spark, input_path, "auto")
            ctx.input_desc = input_path
        else:
            ctx.input_df = read_input(spark, in_cfg)
            ctx.input_desc = in_cfg.path or in_cfg.table
            ctx.input_rows = recorded_rows
    except CurationError as exc:
        ctx.input_df = None
        ctx.input_note = f"The input table could not be read ({exc}); the input comparisons are skipped."
        return
    cols = ctx.input_df.columns
    if ctx.id_col not in cols:
        ctx.input_note = (f"The input table has no id column {ctx.id_col!r} (columns: {', '.join(cols)}); "
                          "the input comparisons are skipped.")
        ctx.input_df = None
        return
    if input_path or ctx.input_rows is None:
        ctx.input_rows = int(ctx.input_df.count())


def _centroid_dim(ctx: RunData) -> int | None:
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    try:
        cents = read_level_table(ctx, ctx.levels[0], "centroids")
        row = cents.select(F.size("centroid").alias("d")).head(1)
        return int(row[0]["d"]) if row else None
    except (CurationError, PySparkException) as exc:  # the figures that need it say so themselves
        log.debug("report: no dimension from level %d's centroids: %s", ctx.levels[0], exc)
        return None


def read_level_table(ctx: RunData, level: int, kind: str) -> DataFrame:
    from curation_spark.io.tables import read_table

    path = ctx.run.centroids_path(level) if kind == "centroids" else ctx.run.assignments_path(level)
    return read_table(ctx.spark, path, ctx.run.format)


def small_centroids(ctx: RunData, level: int) -> pa.Table | None:
    """``cluster_id``, ``size`` (and ``x``, ``y``: the first two coordinates, for 2-D runs)
    of a level's centroids, collected once when run.json gives the level at most
    :data:`SMALL_TABLE_ROWS` clusters; None otherwise (the sections query Spark then).
    Raises :class:`CurationError` if the table cannot be read, as a direct read would."""
    from pyspark.sql import functions as F

    key = ("centroids", level)
    if key not in ctx.small:
        known = n_clusters(ctx, level)
        table = None
        if known is not None and known <= SMALL_TABLE_ROWS:
            cols = [F.col("cluster_id"), F.col("size")]
            if ctx.dim == 2:
                cols += [F.element_at("centroid", 1).cast("double").alias("x"),
                         F.element_at("centroid", 2).cast("double").alias("y")]
            table = read_level_table(ctx, level, "centroids").select(*cols).toArrow()
        ctx.small[key] = table
    return ctx.small[key]


def small_input(ctx: RunData) -> pa.Table | None:
    """The input's ``id`` (and ``label``; ``x``, ``y`` for 2-D embeddings), collected once
    when it has at most :data:`SMALL_TABLE_ROWS` rows; None otherwise."""
    from pyspark.sql import functions as F

    from curation_spark.io.tables import embedding_array_column

    if "input" not in ctx.small:
        table = None
        inp = ctx.input_df
        if inp is not None and ctx.input_rows is not None and ctx.input_rows <= SMALL_TABLE_ROWS:
            cols = [F.col(ctx.id_col).alias("id")]
            if LABEL_COL in inp.columns:
                cols.append(F.col(LABEL_COL))
            if ctx.dim == 2 and ctx.embedding_col in inp.columns:
                emb = embedding_array_column(inp, ctx.embedding_col)
                cols += [F.element_at(emb, 1).cast("double").alias("x"), F.element_at(emb, 2).cast("double").alias("y")]
            table = inp.select(*cols).toArrow()
        ctx.small["input"] = table
    return ctx.small["input"]


def small_curated(ctx: RunData) -> pa.Table | None:
    """The curated table's ``id``, ``cluster_id`` (and ``label``), collected once when
    run.json gives it at most :data:`SMALL_TABLE_ROWS` rows; None otherwise."""
    if "curated" not in ctx.small:
        table = None
        rows = curated_rows(ctx)
        if ctx.curated is not None and rows is not None and rows <= SMALL_TABLE_ROWS:
            cols = ["id", "cluster_id"] + ([LABEL_COL] if LABEL_COL in ctx.curated.columns else [])
            table = ctx.curated.select(*cols).toArrow()
        ctx.small["curated"] = table
    return ctx.small["curated"]


def count_values(values: Sequence[Any]) -> dict[Any, int]:
    """``groupBy(col).count()`` of a collected column (None counts as a key, as there)."""
    from collections import Counter

    return dict(Counter(values))


def entropy_from_counts(counts: Sequence[int] | np.ndarray, n_labels: int | None = None) -> float:
    """Normalised label entropy (``label_entropy``) of a label histogram.

    Small histograms are expanded and passed to
    :func:`curation_spark.method.balance.label_entropy` itself, so the report's numbers are
    the ones the demo and the tests compute; a huge set is computed from the counts with
    the same formula instead of materialising it.
    """
    c = np.asarray(counts, dtype=np.int64)
    c = c[c > 0]
    if c.size == 0:
        return float("nan")
    k = len(c) if n_labels is None else int(n_labels)
    if int(c.sum()) <= MAX_ENTROPY_EXPAND:
        return label_entropy(np.repeat(np.arange(len(c)), c), n_labels=k)
    if k <= 1:
        return 1.0
    p = c / c.sum()
    return float(min(1.0, max(0.0, -(p * np.log(p)).sum() / math.log(k))))


def label_counts(ctx: RunData) -> dict[str, Any] | None:
    """Per-label row counts of the input and of the curated set (copies count), or None."""
    from pyspark.sql import functions as F

    if ctx.label_info:
        return ctx.label_info
    if ctx.input_df is None or LABEL_COL not in ctx.input_df.columns or ctx.curated is None:
        return None
    import pyarrow as pa

    inp = ctx.input_df
    small_in, small_cur = small_input(ctx), small_curated(ctx)
    # Collected labels are counted in the driver (Counter = groupBy.count, None included);
    # floating-point labels are left to Spark, whose groupBy puts every NaN in one group.
    if small_in is not None and not pa.types.is_floating(small_in.schema.field(LABEL_COL).type):
        in_counts = count_values(small_in.column(LABEL_COL).to_pylist())
        too_many = len(in_counts) > MAX_LABELS
    else:
        small_in = None
        in_rows = inp.groupBy(LABEL_COL).count().limit(MAX_LABELS + 1).collect()
        too_many = len(in_rows) > MAX_LABELS
        in_counts = {r[LABEL_COL]: int(r["count"]) for r in in_rows}
    if too_many:
        ctx.label_info = {"skipped": f"column {LABEL_COL!r} has more than {MAX_LABELS:,} distinct values; "
                                     "not compared (looks like an id, not a label)"}
        return ctx.label_info
    cur = ctx.curated
    if LABEL_COL in cur.columns:
        source = f"the curated table's {LABEL_COL!r} column"
        if small_cur is not None and not pa.types.is_floating(small_cur.schema.field(LABEL_COL).type):
            cur_counts = count_values(small_cur.column(LABEL_COL).to_pylist())
        else:
            cur_rows = cur.select(LABEL_COL).groupBy(LABEL_COL).count().collect()
            cur_counts = {r[LABEL_COL]: int(r["count"]) for r in cur_rows}
    else:
        source = f"a join of the curated ids with the input's {ctx.id_col!r}"
        if small_cur is not None and small_in is not None:  # ids are unique in a validated input
            label_of = dict(zip(small_in.column("id").to_pylist(), small_in.column(LABEL_COL).to_pylist(),
                                strict=True))
            cur_counts = count_values([label_of.get(i) for i in small_cur.column("id").to_pylist()])
        else:
            ids = inp.select(F.col(ctx.id_col).alias("id"), F.col(LABEL_COL))
            cur_labels = cur.select("id").join(ids, "id", "left").select(LABEL_COL)
            cur_rows = cur_labels.groupBy(LABEL_COL).count().collect()
            cur_counts = {r[LABEL_COL]: int(r["count"]) for r in cur_rows}
    nulls_in, nulls_cur = in_counts.pop(None, 0), cur_counts.pop(None, 0)
    keys = sorted_keys(set(in_counts) | set(cur_counts))
    a = np.array([in_counts.get(k, 0) for k in keys], dtype=np.int64)
    b = np.array([cur_counts.get(k, 0) for k in keys], dtype=np.int64)
    n = len(keys)
    ctx.label_info = {
        "keys": keys, "input": a, "curated": b, "source": source,
        "entropy_input": entropy_from_counts(a, n) if a.sum() else float("nan"),
        "entropy_curated": entropy_from_counts(b, n) if b.sum() else float("nan"),
        "nulls_input": nulls_in, "nulls_curated": nulls_cur,
    }
    return ctx.label_info


# =========================================================================== run.json's numbers, for sections and HTML


def n_clusters(ctx: RunData, level: int) -> int | None:
    """The level's number of clusters by run.json (None if it does not say)."""
    return ctx.level_stats(level).n_clusters if level in ctx.meta.levels else None


def curated_rows(ctx: RunData) -> int | None:
    """Rows of the curated table by run.json's "samples" entry (None if it does not say)."""
    return ctx.curated_summary.rows if ctx.curated_summary is not None else None


def multiplier(ctx: RunData) -> int:
    """The curated table's ``multiplier`` (copies a point may get), 1 if run.json does not say."""
    return ctx.curated_summary.multiplier if ctx.curated_summary is not None else 1


def distance(ctx: RunData) -> str:
    """The distance the run's hierarchy was built with (``auto`` resolved)."""
    return ctx.meta.distance


def objective_infos(ctx: RunData) -> dict[int, dict[str, Any]]:
    """The run.json entries of the levels with a k-means history or resampling steps."""
    infos = {lvl: ctx.level_stats(lvl) for lvl in ctx.levels}
    return {lvl: info.to_dict() for lvl, info in infos.items() if info.kmeans_history or info.resampling}


def resampling_infos(ctx: RunData) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """The run.json entries (copies) of the levels that ran resampling steps, and notes on
    what they lack; a missing size histogram of an older run.json is rebuilt from the sizes
    collected for the cluster-size figure."""
    from curation_spark.method.kernels import size_histogram

    infos = {lvl: ctx.level_stats(lvl).to_dict() for lvl in ctx.levels if ctx.level_stats(lvl).resampling}
    notes = []
    for lvl, info in infos.items():
        if not info.get("sizes_histogram") and lvl in ctx.sizes_cache:  # older run.json: rebuild from the table
            info["sizes_histogram"] = size_histogram(ctx.sizes_cache[lvl])
        if not info.get("sizes_kmeans_histogram"):
            notes.append(f"Level {lvl}: run.json holds no size histogram from before resampling (written by an "
                         "older version); only the sizes after resampling and the per-step statistics are shown.")
        if info.get("split"):
            notes.append(f"Level {lvl} also split its clusters after resampling; the 'after' sizes include the split.")
    return infos, notes


def level_rows(ctx: RunData) -> list[dict[str, Any]]:
    """One row of the levels table per complete level: run.json's numbers, unformatted."""
    rows = []
    for level in ctx.levels:
        info = ctx.level_stats(level)
        s, sk = info.sizes, info.sizes_kmeans
        rows.append({
            "level": level, "n_clusters_requested": info.n_clusters_requested,
            "n_clusters": info.n_clusters, "n_points": info.n_points,
            "size_min": s.get("min"), "size_median": s.get("median"), "size_max": s.get("max"),
            "gini_kmeans": sk.get("gini"), "gini": s.get("gini"),
            "objective_kmeans": info.objective_kmeans, "objective": info.objective,
            "resampling_steps": len(info.resampling), "n_splits": info.n_splits,
            # largest_share: absent from size statistics written before it existed
            "largest_share": s.get("largest_share"), "degenerate": info.degenerate,
            "seconds": info.seconds,
        })
    return rows


def sample_rows(ctx: RunData) -> list[dict[str, Any]]:
    """One row per curated table of run.json's "samples", unformatted."""
    rows = []
    for name, s in ctx.meta.samples.items():
        rows.append({"name": name, "this_report": name == ctx.curated_name, "rows": s.rows,
                     "target_size": s.target_size, "expected_rows": s.expected_rows,
                     "multiplier": s.multiplier, "strategy": s.strategy, "seed": s.seed, "path": s.path})
    return rows


def run_facts(ctx: RunData) -> dict[str, Any]:
    """The run-level facts of the report's header and its configuration section."""
    meta = ctx.meta
    return {
        "updated": meta.updated or "",
        "input_rows": ctx.input_rows if ctx.input_rows is not None else meta.input.n_rows,
        "curated_rows": curated_rows(ctx),
        "fingerprint": meta.fingerprint,
        "config": meta.config.to_dict(),
        "distance": meta.distance,
    }
