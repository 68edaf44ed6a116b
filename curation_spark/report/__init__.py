"""HTML report of a run folder: the figures that show whether a curation did its job.

Why: the numbers in ``run.json`` (objectives, Gini coefficients, size quantiles) are hard
to judge by eye, and the paper's argument is visual: plain k-means puts its centroids
where the data is dense, resampling spreads them over the support, and balanced sampling
flattens the cluster (and, as a check, the label) distribution. The report draws those
figures from a finished run (``run.json``, the level tables and a curated table) and
writes one self-contained ``report.html`` (figures embedded as base64 ``<img>``) with
the same figures saved next to it as PNG files.

Only small things reach the driver: the ``size`` column of the centroid tables (capped,
sampled beyond the cap), group-by counts, and samples of at most ~50k points for the 2-D
scatter. Tables that are small as a whole (at most :data:`SMALL_TABLE_ROWS` rows by
run.json's counts: the toy demo's input, centroids and curated set) are collected once and
shared by the sections, which then count and join them in the driver instead of each
querying Spark. Every figure is optional: what cannot be drawn (a level that is missing, no
curated table, no input, no ``label`` column, more than two dimensions) is skipped with
a note in the HTML instead of failing the whole report.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np

from curation_spark.io import paths
from curation_spark.errors import ConfigError, CurationError
from curation_spark.io.runfolder import RunFolder, open_existing

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

__all__ = [
    "write_report", "REPORT_HTML", "FIGURES", "FIG_SIZES", "FIG_OBJECTIVE", "FIG_RESAMPLING", "FIG_LABELS",
    "FIG_PER_CLUSTER", "FIG_SCATTER", "plot_cluster_sizes", "plot_objectives", "plot_resampling",
    "plot_labels", "plot_curated_per_cluster", "plot_scatter_2d", "entropy_from_counts",
]

REPORT_HTML = "report.html"
FIG_SIZES = "cluster_sizes.png"
FIG_OBJECTIVE = "objective.png"
FIG_RESAMPLING = "resampling_effect.png"
FIG_LABELS = "labels.png"
FIG_PER_CLUSTER = "curated_per_cluster.png"
FIG_SCATTER = "scatter_2d.png"
#: Every figure the report can draw, in the order it shows them.
FIGURES = (FIG_SIZES, FIG_OBJECTIVE, FIG_RESAMPLING, FIG_LABELS, FIG_PER_CLUSTER, FIG_SCATTER)

#: Ground-truth column compared between input and curated set when the input has it.
LABEL_COL = "label"
#: At most this many cluster sizes per level reach the driver (a seeded sample beyond).
MAX_SIZES = 2_000_000
#: At most this many points per panel of the 2-D scatter.
MAX_SCATTER = 50_000
#: At most this many level-1 clusters in the curated-per-cluster scatter.
MAX_CLUSTER_POINTS = 200_000
#: Up to this many labels are drawn as bars; more are drawn as sorted share curves.
MAX_BAR_LABELS = 40
#: Label columns with more distinct values than this are not compared (an id, not a label).
MAX_LABELS = 100_000
#: Above this many labelled rows the entropy is computed from the counts directly.
MAX_ENTROPY_EXPAND = 5_000_000
#: Tables of at most this many rows (run.json's counts) are collected once, whole, and
#: shared by the sections that read them, instead of one Spark query per section.
SMALL_TABLE_ROWS = 50_000
DPI = 110
SEED = 0

INPUT_COLOR = "#4c72b0"
CURATED_COLOR = "#dd8452"
BEFORE_COLOR = "#8c8c8c"
AFTER_COLOR = "#c44e52"


# =========================================================================== public entry point


def write_report(run_path: str, out_dir: str | None = None, table: str | None = None,
                 input_path: str | None = None, spark: "SparkSession | None" = None) -> str:
    """Write ``report.html`` (and its PNG figures) for the run folder ``run_path``.

    Parameters
    ----------
    run_path
        A run folder (holds ``run.json``); :class:`ConfigError` naming it otherwise.
    out_dir
        Local folder for ``report.html`` and the PNGs; default ``<run>/report`` (or, for a
        run folder on a remote file system, ``./report_<run name>``).
    table
        Curated table to describe (a name in ``run.json`` "samples", a table folder inside
        the run, or a path); default the most recently written curated table.
    input_path
        Input table to compare against (Parquet/Delta folder); default the run's input
        (``input.path`` / ``input.table`` of its config).
    spark
        Session to use; default the active one (:func:`curation_spark.io.session.get_spark`).

    Returns
    -------
    str
        Path of the written ``report.html``.
    """
    started = time.perf_counter()
    if spark is None:
        from curation_spark.io.session import get_spark

        spark = get_spark()
    run = open_existing(spark, run_path)
    target = _report_dir(run.path, out_dir)
    ctx = _open_context(spark, run, table, input_path, target)  # a bad --table fails before anything is written
    os.makedirs(target, exist_ok=True)
    log.info("report: run %s, %d level(s), curated table %s, input %s -> %s", run.path, len(ctx.levels),
             ctx.curated_name or "(none)", ctx.input_desc or "(none)", target)
    sections = [
        _build(ctx, FIG_SIZES, "Cluster sizes per level", _section_sizes),
        _build(ctx, FIG_OBJECTIVE, "k-means objective", _section_objective),
        _build(ctx, FIG_RESAMPLING, "Effect of resampling on cluster sizes", _section_resampling),
        _build(ctx, FIG_LABELS, "Labels: input vs curated set", _section_labels),
        _build(ctx, FIG_PER_CLUSTER, "Curated rows per level-1 cluster", _section_per_cluster),
        _build(ctx, FIG_SCATTER, "2-D view: input, centroids, curated set", _section_scatter),
    ]
    _job(spark, None)
    text = _render_html(ctx, sections)
    out = os.path.join(target, REPORT_HTML)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, out)
    drawn = sum(1 for s in sections if s.figure)
    log.info("report: wrote %s (%d figure(s), %.1f s)", out, drawn, time.perf_counter() - started)
    return out


# =========================================================================== context: what the run holds


@dataclass
class _Context:
    """Everything the sections read, opened once."""

    spark: "SparkSession"
    run: RunFolder
    out_dir: str
    levels: list[int]
    id_col: str = "id"
    embedding_col: str = "embedding"
    curated_name: str | None = None
    curated_path: str | None = None
    curated: "DataFrame | None" = None
    curated_summary: dict[str, Any] = field(default_factory=dict)
    curated_note: str | None = None
    input_df: "DataFrame | None" = None
    input_desc: str | None = None
    input_note: str | None = None
    input_rows: int | None = None
    dim: int | None = None
    label_info: dict[str, Any] = field(default_factory=dict)
    sizes_cache: dict[int, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    small: dict[Any, Any] = field(default_factory=dict)

    def level_info(self, level: int) -> dict[str, Any]:
        return self.run.level_info(level)


@dataclass
class _Section:
    """One figure of the report: the PNG (if drawn), its caption, notes and extra HTML."""

    title: str
    name: str
    figure: str | None = None
    image_b64: str | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    extra_html: str = ""


@dataclass
class _Drawn:
    """What a section builder returns."""

    fig: "Figure | None"
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    extra_html: str = ""


def _report_dir(run_path: str, out_dir: str | None) -> str:
    """The local folder the report goes to (matplotlib and ``open`` need a local path)."""
    if out_dir:
        local = _as_local(out_dir)
        if local is None:
            raise ConfigError(f"--out: {out_dir} is not a local folder; the report is written with local file I/O")
        return os.path.abspath(local)
    local = _as_local(run_path)
    if local is not None:
        return os.path.abspath(os.path.join(local, "report"))
    name = run_path.rstrip("/").rsplit("/", 1)[-1] or "run"
    fallback = os.path.abspath(f"report_{name}")
    log.warning("run folder %s is not on the local file system; writing the report to %s (use --out to choose)",
                run_path, fallback)
    return fallback


def _as_local(path: str) -> str | None:
    parsed = urlparse(path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return path
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme == "dbfs" and os.path.isdir("/dbfs"):
        return "/dbfs" + parsed.path
    return None


def _open_context(spark: "SparkSession", run: RunFolder, table: str | None, input_path: str | None,
                  out_dir: str) -> _Context:
    levels = sorted(int(k) for k, v in (run.meta.get("levels") or {}).items()
                    if isinstance(v, dict) and v.get("status") == "complete")
    in_cfg = (run.meta.get("config") or {}).get("input") or {}
    ctx = _Context(spark=spark, run=run, out_dir=out_dir, levels=levels,
                   id_col=in_cfg.get("id_col") or "id", embedding_col=in_cfg.get("embedding_col") or "embedding")
    expected = (run.meta.get("config") or {}).get("clustering", {}).get("n_levels")
    if not levels:
        ctx.notes.append("No level of the hierarchy is complete in run.json; the level figures are skipped.")
    elif expected and len(levels) < int(expected):
        ctx.notes.append(f"Only {len(levels)} of {expected} levels are complete (an interrupted run?).")
    meta_input = run.meta.get("input") or {}
    ctx.dim = int(meta_input["dim"]) if meta_input.get("dim") else None
    _choose_curated(ctx, table)
    _open_input(ctx, input_path, in_cfg, meta_input)
    if ctx.dim is None and levels:
        ctx.dim = _centroid_dim(ctx)
    return ctx


def _choose_curated(ctx: _Context, table: str | None) -> None:
    """``table`` if given (an error if it does not exist), else the newest curated table."""
    from curation_spark.io.tables import read_table, table_exists

    spark, run = ctx.spark, ctx.run
    samples: dict[str, Any] = run.meta.get("samples") or {}
    if table:
        if table in samples:
            name, path = table, samples[table].get("path") or run.table_path(table)
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
        ctx.curated_summary = dict(samples.get(name) or {})
    else:
        candidates = []
        for order, (name, summary) in enumerate(samples.items()):
            path = (summary or {}).get("path") or run.table_path(name)
            if table_exists(spark, path, run.format):
                candidates.append((_mtime(spark, path), order, name, path, summary or {}))
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


def _mtime(spark: "SparkSession", path: str) -> float | None:
    """Newest modification time under a table (its folder, ``_SUCCESS``, ``_delta_log``).

    run.json's "samples" keeps the insertion order of names, so a table that was sampled
    again keeps its old position; the file system knows which one was written last.
    """
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(conf)
        times = [int(fs.getFileStatus(hpath).getModificationTime())]
        for sub in ("_SUCCESS", "_delta_log"):
            p = jvm.org.apache.hadoop.fs.Path(paths.join(path, sub))
            if fs.exists(p):
                status = fs.getFileStatus(p)
                times.append(int(status.getModificationTime()))
                if status.isDirectory():
                    times.extend(int(s.getModificationTime()) for s in fs.listStatus(p))
        return max(times) / 1000.0
    except Exception:  # Spark Connect (no JVM handle): local paths only
        local = _as_local(path)
        try:
            return os.path.getmtime(local) if local else None
        except OSError:
            return None


def _open_input(ctx: _Context, input_path: str | None, in_cfg: Mapping[str, Any],
                meta_input: Mapping[str, Any]) -> None:
    """The input table (``input_path`` or the run's own input), or a note why there is none."""
    from curation_spark.io.tables import read_input, read_table

    spark = ctx.spark
    try:
        if input_path:
            ctx.input_df = read_table(spark, input_path, "auto")
            ctx.input_desc = input_path
        else:
            from curation_spark.config import InputConfig

            cfg = InputConfig(**{k: in_cfg.get(k) for k in ("path", "table", "format", "id_col", "embedding_col")})
            ctx.input_df = read_input(spark, cfg)
            ctx.input_desc = cfg.path or cfg.table
            ctx.input_rows = int(meta_input["n_rows"]) if meta_input.get("n_rows") else None
    except (CurationError, TypeError) as exc:
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


def _centroid_dim(ctx: _Context) -> int | None:
    from pyspark.sql import functions as F

    try:
        cents = _read_level_table(ctx, ctx.levels[0], "centroids")
        row = cents.select(F.size("centroid").alias("d")).head(1)
        return int(row[0]["d"]) if row else None
    except Exception:
        return None


def _read_level_table(ctx: _Context, level: int, kind: str) -> "DataFrame":
    from curation_spark.io.tables import read_table

    path = ctx.run.centroids_path(level) if kind == "centroids" else ctx.run.assignments_path(level)
    return read_table(ctx.spark, path, ctx.run.format)


def _small_centroids(ctx: _Context, level: int) -> "pa.Table | None":
    """``cluster_id``, ``size`` (and ``x``, ``y``: the first two coordinates, for 2-D runs)
    of a level's centroids, collected once when run.json gives the level at most
    :data:`SMALL_TABLE_ROWS` clusters; None otherwise (the sections query Spark then).
    Raises :class:`CurationError` if the table cannot be read, as a direct read would."""
    from pyspark.sql import functions as F

    key = ("centroids", level)
    if key not in ctx.small:
        known = ctx.level_info(level).get("n_clusters")
        table = None
        if known is not None and int(known) <= SMALL_TABLE_ROWS:
            cols = [F.col("cluster_id"), F.col("size")]
            if ctx.dim == 2:
                cols += [F.element_at("centroid", 1).cast("double").alias("x"),
                         F.element_at("centroid", 2).cast("double").alias("y")]
            table = _read_level_table(ctx, level, "centroids").select(*cols).toArrow()
        ctx.small[key] = table
    return ctx.small[key]


def _small_input(ctx: _Context) -> "pa.Table | None":
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


def _small_curated(ctx: _Context) -> "pa.Table | None":
    """The curated table's ``id``, ``cluster_id`` (and ``label``), collected once when
    run.json gives it at most :data:`SMALL_TABLE_ROWS` rows; None otherwise."""
    if "curated" not in ctx.small:
        table = None
        rows = ctx.curated_summary.get("rows")
        if ctx.curated is not None and rows is not None and int(rows) <= SMALL_TABLE_ROWS:
            cols = ["id", "cluster_id"] + ([LABEL_COL] if LABEL_COL in ctx.curated.columns else [])
            table = ctx.curated.select(*cols).toArrow()
        ctx.small["curated"] = table
    return ctx.small["curated"]


def _count_values(values: Sequence[Any]) -> dict[Any, int]:
    """``groupBy(col).count()`` of a collected column (None counts as a key, as there)."""
    from collections import Counter

    return dict(Counter(values))


def _job(spark: "SparkSession", text: str | None) -> None:
    try:
        spark.sparkContext.setJobDescription(text)
    except AttributeError:  # Spark Connect has no SparkContext
        pass


def _build(ctx: _Context, name: str, title: str, builder: Callable[[_Context], _Drawn]) -> _Section:
    """Run one section builder; a failure becomes a note, never a failed report."""
    section = _Section(title=title, name=name)
    _job(ctx.spark, f"report · {title}")
    t0 = time.perf_counter()
    try:
        drawn = builder(ctx)
    except Exception as exc:
        log.warning("report: could not draw %s: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        section.notes.append(f"This figure could not be drawn: {type(exc).__name__}: {first}")
        return section
    section.caption, section.notes, section.extra_html = drawn.caption, list(drawn.notes), drawn.extra_html
    if drawn.fig is not None:
        section.figure, section.image_b64 = name, _save_figure(drawn.fig, ctx.out_dir, name)
        log.info("report: %s (%.1f s)", name, time.perf_counter() - t0)
    else:
        stale = os.path.join(ctx.out_dir, name)
        if os.path.exists(stale):  # an earlier report's figure must not pass for this one's
            os.remove(stale)
        log.info("report: %s skipped: %s", name, "; ".join(section.notes) or "nothing to draw")
    return section


# =========================================================================== collecting (Spark -> small numpy)


def _collect_column(df: "DataFrame", col: str, n_rows: int | None, cap: int,
                    seed: int = SEED) -> tuple[np.ndarray, int]:
    """One column as numpy, at most ``cap`` values (a seeded sample beyond); returns (values, total rows)."""
    total = int(df.count()) if n_rows is None else int(n_rows)
    part = df.select(col)
    if total > cap:
        part = part.sample(withReplacement=False, fraction=min(1.0, 1.05 * cap / total), seed=seed).limit(cap)
    values = part.toPandas()[col].to_numpy()
    return values, total


def _collect_xy(df: "DataFrame", array_col, extra: Sequence[str], n_rows: int | None, cap: int,
                seed: int = SEED) -> tuple["pd.DataFrame", int]:
    """The first two coordinates of an embedding/centroid column (plus ``extra`` columns), sampled to ``cap``."""
    from pyspark.sql import functions as F

    total = int(df.count()) if n_rows is None else int(n_rows)
    part = df
    if total > cap:
        part = part.sample(withReplacement=False, fraction=min(1.0, 1.05 * cap / total), seed=seed).limit(cap)
    part = part.select(F.element_at(array_col, 1).cast("double").alias("x"),
                       F.element_at(array_col, 2).cast("double").alias("y"), *extra)
    return part.toPandas(), total


def _level_sizes(ctx: _Context) -> tuple[dict[int, np.ndarray], dict[int, int], list[str]]:
    sizes: dict[int, np.ndarray] = {}
    totals: dict[int, int] = {}
    notes: list[str] = []
    for level in ctx.levels:
        try:
            small = _small_centroids(ctx, level)
            cents = _read_level_table(ctx, level, "centroids") if small is None else None
        except CurationError as exc:
            notes.append(f"Level {level}: centroids table missing ({exc}); skipped.")
            continue
        known = ctx.level_info(level).get("n_clusters")
        if small is not None:
            values, total = small.column("size").to_numpy(), int(known)
        else:
            values, total = _collect_column(cents, "size", int(known) if known is not None else None, MAX_SIZES)
        sizes[level] = values.astype(np.int64)
        totals[level] = total
        if total == len(values):
            ctx.sizes_cache[level] = sizes[level]
        if total > len(values):
            notes.append(f"Level {level}: a random sample of {len(values):,} of {total:,} cluster sizes is shown.")
    return sizes, totals, notes


def entropy_from_counts(counts: Sequence[int] | np.ndarray, n_labels: int | None = None) -> float:
    """Normalised label entropy (``synth.label_entropy``) of a label histogram.

    Small histograms are expanded and passed to :func:`curation_spark.synth.label_entropy`
    itself, so the report's numbers are the ones the demo and the tests compute; a huge
    set is computed from the counts with the same formula instead of materialising it.
    """
    from curation_spark import synth

    c = np.asarray(counts, dtype=np.int64)
    c = c[c > 0]
    if c.size == 0:
        return float("nan")
    k = len(c) if n_labels is None else int(n_labels)
    if int(c.sum()) <= MAX_ENTROPY_EXPAND:
        return synth.label_entropy(np.repeat(np.arange(len(c)), c), n_labels=k)
    if k <= 1:
        return 1.0
    p = c / c.sum()
    return float(min(1.0, max(0.0, -(p * np.log(p)).sum() / math.log(k))))


def _label_counts(ctx: _Context) -> dict[str, Any] | None:
    """Per-label row counts of the input and of the curated set (copies count), or None."""
    from pyspark.sql import functions as F

    if ctx.label_info:
        return ctx.label_info
    if ctx.input_df is None or LABEL_COL not in ctx.input_df.columns or ctx.curated is None:
        return None
    import pyarrow as pa

    inp = ctx.input_df
    small_in, small_cur = _small_input(ctx), _small_curated(ctx)
    # Collected labels are counted in the driver (Counter = groupBy.count, None included);
    # floating-point labels are left to Spark, whose groupBy puts every NaN in one group.
    if small_in is not None and not pa.types.is_floating(small_in.schema.field(LABEL_COL).type):
        in_counts = _count_values(small_in.column(LABEL_COL).to_pylist())
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
            cur_counts = _count_values(small_cur.column(LABEL_COL).to_pylist())
        else:
            cur_rows = cur.select(LABEL_COL).groupBy(LABEL_COL).count().collect()
            cur_counts = {r[LABEL_COL]: int(r["count"]) for r in cur_rows}
    else:
        source = f"a join of the curated ids with the input's {ctx.id_col!r}"
        if small_cur is not None and small_in is not None:  # ids are unique in a validated input
            label_of = dict(zip(small_in.column("id").to_pylist(), small_in.column(LABEL_COL).to_pylist()))
            cur_counts = _count_values([label_of.get(i) for i in small_cur.column("id").to_pylist()])
        else:
            ids = inp.select(F.col(ctx.id_col).alias("id"), F.col(LABEL_COL))
            cur_labels = cur.select("id").join(ids, "id", "left").select(LABEL_COL)
            cur_rows = cur_labels.groupBy(LABEL_COL).count().collect()
            cur_counts = {r[LABEL_COL]: int(r["count"]) for r in cur_rows}
    nulls_in, nulls_cur = in_counts.pop(None, 0), cur_counts.pop(None, 0)
    keys = _sorted_keys(set(in_counts) | set(cur_counts))
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


def _sorted_keys(keys: set) -> list:
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=str)


# =========================================================================== sections


def _section_sizes(ctx: _Context) -> _Drawn:
    if not ctx.levels:
        return _Drawn(None, notes=["No complete level in run.json."])
    sizes, totals, notes = _level_sizes(ctx)
    if not sizes:
        return _Drawn(None, notes=notes or ["No centroids table could be read."])
    fig = plot_cluster_sizes(sizes, totals)
    caption = ("Left panels: histogram of cluster sizes per level (log-spaced bins and log axes where the sizes "
               "span a wide range). A level's cluster size is the number of its inputs: points for level 1, "
               "clusters of level l-1 for level l. "
               "Last panel: sizes sorted in decreasing order against their rank (log-log); a flat curve means "
               "balanced clusters.")
    return _Drawn(fig, caption, notes)


def _section_objective(ctx: _Context) -> _Drawn:
    infos = {lvl: ctx.level_info(lvl) for lvl in ctx.levels}
    infos = {lvl: info for lvl, info in infos.items() if info.get("kmeans_history") or info.get("resampling")}
    if not infos:
        return _Drawn(None, notes=["run.json holds no k-means history for any level."])
    distance = ((ctx.run.meta.get("config") or {}).get("clustering") or {}).get("distance", "l2")
    fig = plot_objectives(infos, distance)
    caption = ("Per level, left: the k-means objective at each iteration (computed against the centroids "
               "the iteration starts from). Right (levels with resampling): the objective of all of the level's "
               "points against the centroids after each resampling step; step 0 is plain k-means. Resampling "
               "trades a somewhat higher objective for centroids that cover sparse regions.")
    return _Drawn(fig, caption)


def _section_resampling(ctx: _Context) -> _Drawn:
    from curation_spark.method.kernels import size_histogram

    infos = {lvl: dict(ctx.level_info(lvl)) for lvl in ctx.levels if ctx.level_info(lvl).get("resampling")}
    if not infos:
        return _Drawn(None, notes=["No level ran resampling steps (clustering.n_resampling_steps = 0 or "
                                   "sample_size = 1), so there is no before/after to show."])
    notes = []
    for lvl, info in infos.items():
        if not info.get("sizes_histogram") and lvl in ctx.sizes_cache:  # older run.json: rebuild from the table
            info["sizes_histogram"] = size_histogram(ctx.sizes_cache[lvl])
        if not info.get("sizes_kmeans_histogram"):
            notes.append(f"Level {lvl}: run.json holds no size histogram from before resampling (written by an "
                         "older version); only the sizes after resampling and the per-step statistics are shown.")
        if info.get("split"):
            notes.append(f"Level {lvl} also split its clusters after resampling; the 'after' sizes include the split.")
    fig = plot_resampling(infos)
    caption = ("Left: number of clusters per power-of-two size bin after plain k-means (grey) and after the "
               "last resampling step (red). Right: min / median / max cluster size and the Gini coefficient "
               "(0 = all clusters equal) after each step; step 0 is plain k-means. Resampling moves centroids "
               "from dense regions towards sparse ones, so the clusters become more uneven in size (more small "
               "clusters in sparse regions, larger ones in dense regions): a rising Gini is the expected effect.")
    return _Drawn(fig, caption, notes)


def _section_labels(ctx: _Context) -> _Drawn:
    if ctx.curated is None:
        return _Drawn(None, notes=[ctx.curated_note or "No curated table."])
    if ctx.input_df is None:
        return _Drawn(None, notes=[ctx.input_note or "No input table."])
    if LABEL_COL not in ctx.input_df.columns:
        return _Drawn(None, notes=[f"The input has no {LABEL_COL!r} column; see the per-cluster figure "
                                   "for the distribution of the curated set instead."])
    info = _label_counts(ctx)
    if info is None or "skipped" in (info or {}):
        return _Drawn(None, notes=[(info or {}).get("skipped", "Labels could not be counted.")])
    fig = plot_labels(info["keys"], info["input"], info["curated"], info["entropy_input"], info["entropy_curated"])
    notes = []
    if info["nulls_input"] or info["nulls_curated"]:
        notes.append(f"Rows with a null label are left out: {info['nulls_input']:,} in the input, "
                     f"{info['nulls_curated']:,} in the curated set.")
    caption = (f"Rows per label in the input and in the curated set (curated labels from {info['source']}; "
               "each copy of a point counts). Normalised label entropy H / log(n_labels): 1 = perfectly "
               f"balanced. Input {info['entropy_input']:.3f}, curated {info['entropy_curated']:.3f}.")
    extra = _label_table_html(info) if len(info["keys"]) <= MAX_BAR_LABELS else ""
    return _Drawn(fig, caption, notes, extra)


def _section_per_cluster(ctx: _Context) -> _Drawn:
    from pyspark.sql import functions as F

    if ctx.curated is None:
        return _Drawn(None, notes=[ctx.curated_note or "No curated table."])
    if 1 not in ctx.levels:
        return _Drawn(None, notes=["Level 1 is not complete."])
    small, small_cur = _small_centroids(ctx, 1), _small_curated(ctx)
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
        cents = _read_level_table(ctx, 1, "centroids").select("cluster_id", "size")
        per = ctx.curated.groupBy("cluster_id").agg(F.count(F.lit(1)).alias("curated"))
        joined = cents.join(per, "cluster_id", "left").fillna(0, ["curated"])
        known = ctx.level_info(1).get("n_clusters")
        total = int(known) if known is not None else None
        n = total if total is not None else int(joined.count())
        part = joined
        if n > MAX_CLUSTER_POINTS:
            part = joined.sample(False, min(1.0, 1.05 * MAX_CLUSTER_POINTS / n), seed=SEED).limit(MAX_CLUSTER_POINTS)
            notes.append(f"A random sample of {MAX_CLUSTER_POINTS:,} of {n:,} level-1 clusters is shown.")
        pdf = part.select("size", "curated").toPandas()
        size, curated = pdf["size"].to_numpy(np.int64), pdf["curated"].to_numpy(np.int64)
    if len(size) == 0:
        return _Drawn(None, notes=["The level-1 centroids table is empty."])
    summary = ctx.curated_summary
    fig = plot_curated_per_cluster(size, curated, int(summary.get("multiplier", 1) or 1))
    caption = ("Left: curated rows (copies included) drawn from each level-1 cluster against the cluster's "
               "size (log x; y linear near 0, log above). Balanced sampling takes all of a small cluster "
               "(dashed line: rows = multiplier x size) and caps the large ones, so the points should lie on "
               "the line and then flatten. Right: how many clusters contribute 0, 1, 2, ... curated rows, with "
               "the Gini coefficient of the cluster sizes next to that of the curated rows per cluster "
               "(lower = more even).")
    return _Drawn(fig, caption, notes)


def _section_scatter(ctx: _Context) -> _Drawn:
    from pyspark.sql import functions as F

    from curation_spark.io.tables import embedding_array_column

    if ctx.dim is None:
        return _Drawn(None, notes=["The embedding dimension is unknown (no input information in run.json)."])
    if ctx.dim != 2:
        return _Drawn(None, notes=[f"The embeddings have dimension {ctx.dim}; the scatter is drawn for 2-D data only."])
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
        small_in = _small_input(ctx)
        if small_in is not None:  # the whole input, already collected
            input_pts = small_in.select(["x", "y", *extra]).to_pandas()
        else:
            input_pts, total = _collect_xy(ctx.input_df, emb, extra, ctx.input_rows, MAX_SCATTER)
            if total > len(input_pts):
                notes.append(f"Input: a random sample of {len(input_pts):,} of {total:,} points.")
    centroids: dict[int, np.ndarray] = {}
    for level in sorted({min(ctx.levels, default=0), max(ctx.levels, default=0)} - {0}):
        try:
            small = _small_centroids(ctx, level)
            cents = _read_level_table(ctx, level, "centroids") if small is None else None
        except CurationError:
            notes.append(f"Level {level}: centroids table missing.")
            continue
        if small is not None:
            centroids[level] = np.column_stack([small.column("x").to_numpy(), small.column("y").to_numpy()])
            continue
        known = ctx.level_info(level).get("n_clusters")
        pdf, total = _collect_xy(cents, F.col("centroid"), [], int(known) if known is not None else None,
                                 MAX_SCATTER)
        centroids[level] = pdf[["x", "y"]].to_numpy()
        if total > len(pdf):
            notes.append(f"Level {level}: a random sample of {len(pdf):,} of {total:,} centroids.")
    curated_pts = None
    small_in, small_cur = _small_input(ctx), _small_curated(ctx)
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
        extra = [LABEL_COL] if LABEL_COL in ctx.input_df.columns else []
        curated_pts = pa.table({"x": picked.column("x"), "y": picked.column("y"),
                                "copies": pc.filter(copies, found).cast(pa.int64()),
                                **{c: picked.column(c) for c in extra}}).to_pandas()
    elif emb is not None:
        copies = ctx.curated.groupBy("id").agg(F.count(F.lit(1)).alias("copies"))
        cols = [F.col(ctx.id_col).alias("id"), emb.alias("_emb")]
        if LABEL_COL in ctx.input_df.columns:
            cols.append(F.col(LABEL_COL))
        joined = copies.join(ctx.input_df.select(*cols), "id", "inner")
        extra = ["copies"] + ([LABEL_COL] if LABEL_COL in ctx.input_df.columns else [])
        # Distinct curated points <= curated rows: when the rows fit, no count (one job less).
        rows = ctx.curated_summary.get("rows")
        bound = int(rows) if rows is not None and int(rows) <= MAX_SCATTER else None
        curated_pts, total = _collect_xy(joined, F.col("_emb"), extra, bound, MAX_SCATTER)
        total = max(total, len(curated_pts)) if bound is None else len(curated_pts)
        if total > len(curated_pts):
            notes.append(f"Curated: a random sample of {len(curated_pts):,} of {total:,} distinct points.")
    if input_pts is None and not centroids:
        return _Drawn(None, notes=notes)
    fig = plot_scatter_2d(input_pts, centroids, curated_pts)
    caption = ("The paper's toy view. Input points (coloured by label where there is one), the level-1 "
               "centroids and the top-level centroids over the input (grey), and the curated set (distinct "
               "points; larger markers = more copies). Plain k-means puts most centroids where the points are "
               "dense; resampling and hierarchical balanced sampling should cover every group about equally.")
    return _Drawn(fig, caption, notes)


# =========================================================================== plotting (numpy in, Figure out)


def _figure(n_rows: int, n_cols: int, panel_w: float, panel_h: float) -> tuple["Figure", list[list["Axes"]]]:
    """An Agg-backed figure (no pyplot: no global state, no GUI backend in notebooks/servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_w * n_cols, panel_h * n_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def _save_figure(fig: "Figure", out_dir: str, name: str) -> str:
    """Save as ``out_dir/name`` and return the PNG as base64 for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    data = buf.getvalue()
    with open(os.path.join(out_dir, name), "wb") as fh:
        fh.write(data)
    fig.clear()
    return base64.b64encode(data).decode("ascii")


def _fmt(v: float) -> str:
    """Compact number for titles and tick labels."""
    v = float(v)
    if v != v:
        return "n/a"
    if abs(v) >= 1e12:
        return f"{v:.2g}"
    if abs(v) >= 1e9:
        return f"{v / 1e9:.3g}G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}" if v != int(v) else f"{int(v)}"


def _plain_log_ticks(ax: "Axes", which: str = "x") -> None:
    """Log-axis ticks as plain numbers (10, 20, 50, 1k) instead of 2x10^1 mantissa labels,
    which overlap when an axis spans less than two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    lo, hi = max(min(lo, hi), 1e-12), max(lo, hi, 1e-12)
    decades = math.log10(hi / lo) if hi > lo else 0.0
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,) if decades <= 7 else None
    axis.set_major_locator(LogLocator(base=10, subs=subs) if subs else LogLocator(base=10, numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _size_bins(pos: np.ndarray) -> tuple[np.ndarray, bool]:
    """Histogram edges for positive integer sizes: integer bins if the range is narrow, else log-spaced
    (about 2 sqrt(K) bins, 8 to 40, so a small level is not a comb of single clusters)."""
    lo, hi = int(pos.min()), int(pos.max())
    if hi - lo <= 40:
        return np.arange(lo, hi + 2) - 0.5, False
    n_bins = int(np.clip(2 * math.sqrt(pos.size), 8, 40))
    edges = np.unique(np.floor(np.geomspace(lo, hi + 1, n_bins + 1)))
    if edges[-1] <= hi:
        edges = np.append(edges, hi + 1)
    return edges, True


def plot_cluster_sizes(sizes: Mapping[int, np.ndarray], totals: Mapping[int, int] | None = None) -> "Figure":
    """One histogram of cluster sizes per level, plus a rank-size panel of all levels."""
    levels = sorted(sizes)
    n_panels = len(levels) + 1
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = _figure(n_rows, n_cols, 4.4, 3.5)
    flat = [ax for row in axes for ax in row]
    cmap = _level_colors(len(levels))
    for i, level in enumerate(levels):
        ax = flat[i]
        s = np.asarray(sizes[level], dtype=np.int64)
        pos = s[s > 0]
        n_empty = int((s == 0).sum())
        total = (totals or {}).get(level, len(s))
        title = f"level {level}: {_fmt(total)} clusters"
        if n_empty:
            title += f" ({n_empty} empty)"
        if pos.size:  # the numbers in the title: a text box inside would cover the tallest bars
            title += f"\nmin {_fmt(pos.min())} · max {_fmt(pos.max())} · Gini {_gini(s):.2f}"
        ax.set_title(title, fontsize=10)
        if pos.size == 0:
            ax.text(0.5, 0.5, "all clusters empty", ha="center", va="center", transform=ax.transAxes)
            continue
        edges, logx = _size_bins(pos)
        counts, _, _ = ax.hist(pos, bins=edges, color=cmap[i], edgecolor="white", linewidth=0.4)
        med = float(np.median(pos))
        ax.axvline(med, color="black", lw=1, ls="--", label=f"median {_fmt(med)}")
        if logx:
            ax.set_xscale("log")
            _plain_log_ticks(ax, "x")
        nz = counts[counts > 0]
        if nz.size and nz.max() / nz.min() > 20:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
            bottom, top = ax.get_ylim()
            ax.set_ylim(bottom, top * 3)  # room for the legend
        else:
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(top=ax.get_ylim()[1] * 1.15)  # room for the legend
        ax.set_xlabel("cluster size (points)" if level == 1 else f"cluster size (level-{level - 1} clusters)")
        ax.set_ylabel("number of clusters")
        ax.legend(fontsize=8, loc="upper right")
    ax = flat[len(levels)]
    for i, level in enumerate(levels):
        s = np.sort(np.asarray(sizes[level], dtype=np.int64))[::-1]
        s = s[s > 0]
        if s.size:
            ax.plot(np.arange(1, s.size + 1), s, color=cmap[i], lw=1.5, label=f"level {level}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax, "x")
    _plain_log_ticks(ax, "y")
    ax.set_xlabel("rank (largest cluster first)")
    ax.set_ylabel("cluster size")
    ax.set_title("rank-size, all levels", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle("Cluster size distributions", fontsize=12)
    return fig


def plot_objectives(infos: Mapping[int, Mapping[str, Any]], distance: str = "l2") -> "Figure":
    """Per level: k-means objective per iteration, and objective per resampling step."""
    levels = sorted(infos)
    any_resampling = any(infos[lvl].get("resampling") for lvl in levels)
    n_cols = 2 if any_resampling else 1
    fig, axes = _figure(len(levels), n_cols, 4.8, 3.0)
    ylabel = "sum of squared distances" if distance == "l2" else "sum of (1 - cos)"
    for row, level in enumerate(levels):
        info = infos[level]
        ax = axes[row][0]
        hist = info.get("kmeans_history") or []
        k = info.get("n_clusters_requested", info.get("n_clusters", "?"))
        if hist:
            its = [h.get("iteration", i + 1) for i, h in enumerate(hist)]
            obj = [float(h.get("objective", float("nan"))) for h in hist]
            ax.plot(its, obj, marker="o", ms=3, color=INPUT_COLOR, label="k-means")
            _maybe_log_y(ax, obj)
            ax.set_xlabel("iteration")
            if len(its) <= 12:
                ax.set_xticks(its)
        else:
            ax.text(0.5, 0.5, "no k-means history in run.json", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.set_title(f"level {level}: k-means, K={k}, {_fmt(info.get('n_points', float('nan')))} points", fontsize=10)
        ax.grid(True, alpha=0.3)
        if n_cols == 2:
            ax = axes[row][1]
            steps = info.get("resampling") or []
            if steps:
                xs = [0] + [int(s.get("step", i + 1)) for i, s in enumerate(steps)]
                ys = [float(info.get("objective_kmeans", hist[-1]["objective"] if hist else float("nan")))]
                ys += [float(s.get("objective", float("nan"))) for s in steps]
                ax.plot(xs, ys, marker="s", ms=4, color=AFTER_COLOR)
                _maybe_log_y(ax, ys)
                ax.set_xticks(xs if len(xs) <= 12 else np.linspace(0, xs[-1], 6).astype(int))
                ax.set_xlabel("resampling step (0 = k-means)")
                ax.set_ylabel(ylabel)
                ax.grid(True, alpha=0.3)
                ax.set_title(f"level {level}: after each resampling step", fontsize=10)
            else:
                ax.text(0.5, 0.5, f"level {level}: no resampling", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
    fig.suptitle("k-means objective", fontsize=12)
    return fig


def _maybe_log_y(ax: "Axes", values: Sequence[float]) -> None:
    v = np.asarray([x for x in values if x == x and x > 0])
    if v.size > 1 and v.max() / v.min() > 50:
        ax.set_yscale("log")
        _plain_log_ticks(ax, "y")


def _pow2_labels(edges: Sequence[int]) -> list[str]:
    """``[0,1,2,4,8,...]`` edges as bin labels: "0", "1", "2-3", "4-7", ..."""
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        hi = int(hi) - 1
        labels.append(_fmt(lo) if hi <= lo else f"{_fmt(lo)}-{_fmt(hi)}")
    return labels


def plot_resampling(infos: Mapping[int, Mapping[str, Any]]) -> "Figure":
    """Per level with resampling: size histogram before vs after, and size stats per step."""
    levels = sorted(infos)
    fig, axes = _figure(len(levels), 2, 5.2, 3.3)
    for row, level in enumerate(levels):
        info = infos[level]
        empty = {"edges": [0, 1], "counts": [0]}
        before = info.get("sizes_kmeans_histogram") or empty
        after = info.get("sizes_histogram") or empty
        edges = before["edges"] if len(before["edges"]) >= len(after["edges"]) else after["edges"]
        n_bins = len(edges) - 1
        b = np.zeros(n_bins, dtype=np.int64)
        a = np.zeros(n_bins, dtype=np.int64)
        b[: len(before["counts"])] = before["counts"]
        a[: len(after["counts"])] = after["counts"]
        used = np.nonzero((a + b) > 0)[0]
        lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, n_bins)
        x = np.arange(hi - lo)
        labels = _pow2_labels(edges)[lo:hi]
        ax = axes[row][0]
        width = 0.4
        sb = info.get("sizes_kmeans") or {}
        sa = info.get("sizes") or {}
        both_hists = bool(info.get("sizes_kmeans_histogram")) and bool(info.get("sizes_histogram"))
        shift = width / 2 if both_hists else 0.0  # a lone histogram is centred on its ticks
        if info.get("sizes_kmeans_histogram"):
            ax.bar(x - shift, b[lo:hi], width, color=BEFORE_COLOR,
                   label=f"k-means (Gini {sb.get('gini', float('nan')):.2f})")
        if info.get("sizes_histogram"):
            ax.bar(x + shift, a[lo:hi], width, color=AFTER_COLOR,
                   label=f"after {len(info['resampling'])} resampling step(s) "
                         f"(Gini {sa.get('gini', float('nan')):.2f})")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45 if len(x) > 6 else 0, ha="right" if len(x) > 6 else "center",
                           fontsize=8)
        nz = np.concatenate([a[lo:hi], b[lo:hi]])
        nz = nz[nz > 0]
        if nz.size and nz.max() / nz.min() > 30:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
            ax.set_ylim(top=ax.get_ylim()[1] * 3)  # room for the legend
        else:
            ax.yaxis.get_major_locator().set_params(integer=True)
            ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
        ax.set_xlabel("cluster size (power-of-two bins)")
        ax.set_ylabel("number of clusters")
        ax.set_title(f"level {level}: sizes before vs after resampling", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax = axes[row][1]
        stats = [sb] + [s.get("sizes") or {} for s in info["resampling"]]
        xs = np.arange(len(stats))
        for key, style in (("max", "-^"), ("median", "-o"), ("min", "-v")):
            ys = [float(s.get(key, float("nan"))) for s in stats]
            ax.plot(xs, ys, style, ms=4, label=key)
        ys_all = [float(s.get(k, 0)) for s in stats for k in ("min", "max")]
        if min(ys_all) > 0 and max(ys_all) / min(ys_all) > 20:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
        ax.set_xlabel("resampling step (0 = k-means)")
        ax.set_ylabel("cluster size")
        ax.set_xticks(xs if len(xs) <= 12 else np.linspace(0, xs[-1], 6).astype(int))
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(xs, [float(s.get("gini", float("nan"))) for s in stats], "--", color="black", lw=1, label="Gini")
        ax2.set_ylabel("Gini")
        ax2.set_ylim(0, 1)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4,
                  frameon=False)
        ax.set_title(f"level {level}: size statistics per step", fontsize=10)
    fig.suptitle("Effect of resampling", fontsize=12)
    return fig


def plot_labels(keys: Sequence[Any], input_counts: np.ndarray, curated_counts: np.ndarray,
                entropy_input: float, entropy_curated: float) -> "Figure":
    """Label counts and shares of the input vs the curated set (bars, or share curves for many labels)."""
    a = np.asarray(input_counts, dtype=np.int64)
    b = np.asarray(curated_counts, dtype=np.int64)
    pa = a / max(a.sum(), 1)
    pb = b / max(b.sum(), 1)
    n = len(keys)
    fig, axes = _figure(1, 2, 5.4 if n <= 12 else 7.0, 3.8)
    ax1, ax2 = axes[0]
    lab_in = f"input ({_fmt(a.sum())} rows, entropy {entropy_input:.3f})"
    lab_cur = f"curated ({_fmt(b.sum())} rows, entropy {entropy_curated:.3f})"
    if n <= MAX_BAR_LABELS:
        x = np.arange(n)
        w = 0.4
        names = [str(k) for k in keys]
        ax1.bar(x - w / 2, a, w, color=INPUT_COLOR, label=lab_in)
        ax1.bar(x + w / 2, b, w, color=CURATED_COLOR, label=lab_cur)
        nz = np.concatenate([a, b])
        nz = nz[nz > 0]
        if nz.size and nz.max() / nz.min() > 20:
            ax1.set_yscale("log")
            _plain_log_ticks(ax1, "y")
        ax1.set_ylabel("rows")
        ax1.set_title("rows per label", fontsize=10)
        ax2.bar(x - w / 2, 100 * pa, w, color=INPUT_COLOR, label="input")
        ax2.bar(x + w / 2, 100 * pb, w, color=CURATED_COLOR, label="curated")
        ax2.axhline(100 / max(n, 1), color="black", ls="--", lw=1, label="uniform")
        ax2.set_ylabel("share of the set (%)")
        ax2.set_title("share per label", fontsize=10)
        rot = 0 if n <= 12 else 60
        for ax in (ax1, ax2):
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=rot, ha="right" if rot else "center", fontsize=8 if n > 12 else 9)
            ax.set_xlabel(LABEL_COL)
            ax.grid(True, axis="y", alpha=0.3)
    else:
        order = np.argsort(-a, kind="stable")
        ranks = np.arange(1, n + 1)
        ax1.plot(ranks, np.where(pa[order] > 0, pa[order], np.nan), color=INPUT_COLOR, label=lab_in)
        ax1.plot(ranks, np.where(pb[order] > 0, pb[order], np.nan), color=CURATED_COLOR, label=lab_cur)
        ax1.axhline(1 / n, color="black", ls="--", lw=1, label="uniform")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        _plain_log_ticks(ax1, "x")
        ax1.set_xlabel(f"{LABEL_COL} rank (by input count)")
        ax1.set_ylabel("share of the set")
        ax1.set_title(f"share per label, {n} labels", fontsize=10)
        ax1.grid(True, alpha=0.3)
        both = (pa > 0) & (pb > 0)
        ax2.scatter(pa[both], pb[both], s=6, alpha=0.5, color=CURATED_COLOR, label="labels in both sets")
        lim = [min(pa[both].min(), pb[both].min()) if both.any() else 1e-6, max(pa.max(), pb.max(), 1e-6)]
        ax2.plot(lim, lim, color="grey", lw=1, ls=":", label="same share")
        ax2.axhline(1 / n, color="black", ls="--", lw=1, label="uniform")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("share in the input")
        ax2.set_ylabel("share in the curated set")
        ax2.set_title(f"{int((b == 0).sum())} label(s) absent from the curated set", fontsize=10)
        ax2.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Labels: input vs curated (normalised entropy {entropy_input:.3f} -> {entropy_curated:.3f})",
                 fontsize=12)
    return fig


def plot_curated_per_cluster(sizes: np.ndarray, curated: np.ndarray, multiplier: int = 1) -> "Figure":
    """Curated rows per level-1 cluster against the cluster size, and both distributions."""
    s = np.asarray(sizes, dtype=np.int64)
    c = np.asarray(curated, dtype=np.int64)
    fig, axes = _figure(1, 2, 5.0, 3.8)
    ax1, ax2 = axes[0]
    keep = s > 0
    rng = np.random.default_rng(SEED)
    jitter = np.exp(rng.uniform(-0.04, 0.04, size=int(keep.sum())))  # separate integer ties on the log axis
    n_keep = max(int(keep.sum()), 1)
    ax1.scatter(s[keep] * jitter, c[keep], s=float(np.clip(4000.0 / n_keep, 4, 28)),
                alpha=float(np.clip(2000.0 / n_keep, 0.25, 0.8)), color=CURATED_COLOR, edgecolor="none",
                label=f"{int(keep.sum()):,} clusters")
    hi = max(int(s.max()), 1)
    line = np.geomspace(1, hi, 50)
    ax1.plot(line, multiplier * line, color="black", ls="--", lw=1, label=f"rows = {multiplier} x size")
    ax1.set_xscale("log")
    _plain_log_ticks(ax1, "x")
    if (c[keep] == 0).any():  # symlog: zero stays visible, counts above 1 on a log scale
        ax1.set_yscale("symlog", linthresh=1.0)
        ax1.set_ylim(bottom=-0.3)
        from matplotlib.ticker import FuncFormatter

        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    else:
        ax1.set_yscale("log")
        _plain_log_ticks(ax1, "y")
    ax1.set_xlabel("level-1 cluster size (input points)")
    ax1.set_ylabel("curated rows from the cluster")
    n_zero = int(((c == 0) & keep).sum())
    ax1.set_title(f"curated rows vs cluster size ({n_zero:,} clusters give none)", fontsize=10)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8, loc="upper left")
    # Right: how evenly the curated rows spread over the clusters (the input sizes are in the
    # cluster-size figure); the two Gini coefficients put the imbalance before/after in numbers.
    top = max(int(c.max()), 1)
    if top <= 40:
        edges = np.arange(0, top + 2) - 0.5
        counts, _, _ = ax2.hist(c, bins=edges, color=CURATED_COLOR, edgecolor="white", linewidth=0.4)
        ax2.xaxis.get_major_locator().set_params(integer=True)
    else:
        n_bins = int(np.clip(2 * math.sqrt(len(c)), 10, 50))
        log_edges = np.unique(np.floor(np.geomspace(1, top + 1, n_bins + 1)))
        if log_edges[-1] <= top:
            log_edges = np.append(log_edges, top + 1)
        edges = np.concatenate([[-0.5], log_edges - 0.5])  # first bin: clusters that give nothing
        counts, _, _ = ax2.hist(c, bins=edges, color=CURATED_COLOR, edgecolor="white", linewidth=0.4)
        ax2.set_xscale("symlog", linthresh=1.0)
        ax2.set_xlim(left=-0.6)
        from matplotlib.ticker import FuncFormatter

        ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    nz = counts[counts > 0]
    if nz.size and nz.max() / nz.min() > 20:
        ax2.set_yscale("log")
        _plain_log_ticks(ax2, "y")
        ax2.set_ylim(top=ax2.get_ylim()[1] * 4)  # room for the Gini box
    else:
        ax2.yaxis.get_major_locator().set_params(integer=True)
        ax2.set_ylim(top=ax2.get_ylim()[1] * 1.3)
    ax2.set_xlabel("curated rows from a level-1 cluster")
    ax2.set_ylabel("number of clusters")
    ax2.set_title("curated rows per cluster", fontsize=10)
    ax2.text(0.97, 0.97, f"Gini of cluster sizes {_gini(s):.2f}\nGini of curated rows {_gini(c):.2f}\n"
                         f"clusters with rows: {int((c > 0).sum()):,} of {len(c):,}",
             transform=ax2.transAxes, ha="right", va="top", fontsize=8,
             bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Curated set per level-1 cluster", fontsize=12)
    return fig


def plot_scatter_2d(input_pts: "pd.DataFrame | None", centroids: Mapping[int, np.ndarray],
                    curated_pts: "pd.DataFrame | None") -> "Figure":
    """Side-by-side 2-D panels: input, centroids of the lowest and top level, curated set."""
    panels: list[tuple[str, Callable[["Axes"], None]]] = []
    label_colors: dict[Any, Any] = {}
    has_labels = input_pts is not None and LABEL_COL in input_pts.columns
    if has_labels:
        keys = _sorted_keys(set(input_pts[LABEL_COL].dropna().unique()))
        palette = _label_palette(len(keys))
        label_colors = {k: palette[i] for i, k in enumerate(keys)}

    def colors_of(pdf: "pd.DataFrame") -> Any:
        if has_labels and LABEL_COL in pdf.columns:
            return [label_colors.get(v, "#999999") for v in pdf[LABEL_COL]]
        return INPUT_COLOR

    def background(ax: "Axes") -> None:
        if input_pts is not None and len(input_pts):
            ax.scatter(input_pts["x"], input_pts["y"], s=2, color="#a0a0a0", alpha=bg_alpha, edgecolor="none",
                       rasterized=True)

    if input_pts is not None:
        alpha = float(np.clip(6000.0 / max(len(input_pts), 1), 0.2, 0.7))
        bg_alpha = float(np.clip(1500.0 / max(len(input_pts), 1), 0.05, 0.4))

        def draw_input(ax: "Axes") -> None:
            ax.scatter(input_pts["x"], input_pts["y"], s=2, c=colors_of(input_pts), alpha=alpha,
                       edgecolor="none", rasterized=True)
            if has_labels and len(label_colors) <= 10:
                from matplotlib.lines import Line2D

                handles = [Line2D([], [], marker="o", ls="", color=col, label=f"{LABEL_COL} {k}")
                           for k, col in label_colors.items()]
                ax.legend(handles=handles, fontsize=7, loc="best", markerscale=0.8)

        panels.append((f"input ({len(input_pts):,} points)", draw_input))
    for level in sorted(centroids):
        pts = centroids[level]

        def draw_centroids(ax: "Axes", pts: np.ndarray = pts) -> None:
            background(ax)
            size = float(np.clip(2000.0 / max(len(pts), 1), 3, 30))
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=AFTER_COLOR, edgecolor="none", alpha=0.8)

        panels.append((f"level-{level} centroids ({len(pts):,})", draw_centroids))
    if curated_pts is not None:
        def draw_curated(ax: "Axes") -> None:
            background(ax)
            copies = curated_pts["copies"].to_numpy() if "copies" in curated_pts.columns else np.ones(len(curated_pts))
            size = float(np.clip(4000.0 / max(len(curated_pts), 1), 3, 25))
            ax.scatter(curated_pts["x"], curated_pts["y"], s=size * np.sqrt(copies), c=colors_of(curated_pts),
                       alpha=0.8, edgecolor="none")

        n_rows = int(curated_pts["copies"].sum()) if "copies" in curated_pts.columns else len(curated_pts)
        panels.append((f"curated set ({len(curated_pts):,} points, {n_rows:,} rows)", draw_curated))
    all_xy = [p for p in ([input_pts[["x", "y"]].to_numpy()] if input_pts is not None else [])]
    all_xy += [c for c in centroids.values() if len(c)]
    if curated_pts is not None and len(curated_pts):
        all_xy.append(curated_pts[["x", "y"]].to_numpy())
    xy = np.concatenate(all_xy) if all_xy else np.zeros((1, 2))
    lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    pad = 0.04 * span
    aspect = float(np.clip(span[1] / span[0], 0.3, 2.0))
    n_cols = 2 if len(panels) > 2 or aspect < 0.8 else len(panels)
    n_cols = max(1, min(n_cols, len(panels)))
    n_rows = math.ceil(len(panels) / n_cols)
    width = 5.6 if n_cols == 2 else 4.6
    fig, axes = _figure(n_rows, n_cols, width, max(2.6, width * aspect) + 0.5)
    flat = [ax for row in axes for ax in row]
    for ax, (title, draw) in zip(flat, panels):
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal", adjustable="box")
        ax.tick_params(labelsize=8)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("2-D embeddings: input, centroids, curated set", fontsize=12)
    return fig


def _level_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(n - 1, 1)) for i in range(n)]


def _label_palette(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _gini(sizes: np.ndarray) -> float:
    from curation_spark.method.kernels import size_stats

    return float(size_stats(np.asarray(sizes))["gini"])


# =========================================================================== HTML


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.note { background: #fff7e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; margin: 0.5em 0; }
.caption { color: #444; font-size: 0.92em; max-width: 1000px; }
.meta { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if v != v:
        return "n/a"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], left: int = 0) -> str:
    """An HTML table; cells are already-escaped HTML, the first ``left`` columns left-aligned."""
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers or []))
    body = []
    for row in rows:
        cells = "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def _levels_table(ctx: _Context) -> str:
    rows = []
    for level in ctx.levels:
        info = ctx.level_info(level)
        s = info.get("sizes") or {}
        sk = info.get("sizes_kmeans") or {}
        rows.append([
            _num(level), _num(info.get("n_clusters_requested")), _num(info.get("n_clusters")),
            _num(info.get("n_points")), _num(s.get("min")), _num(s.get("median")), _num(s.get("max")),
            _num(sk.get("gini"), 3), _num(s.get("gini"), 3),
            _num(info.get("objective_kmeans")), _num(info.get("objective")), _num(len(info.get("resampling") or [])),
            _e((info.get("split") or {}).get("n_splits", 1)), _largest_share(info), _num(info.get("seconds"), 3),
        ])
    if not rows:
        return "<p class='note'>No complete level.</p>"
    return _table(["level", "K requested", "clusters", "points", "size min", "size median", "size max",
                   "Gini (k-means)", "Gini (final)", "objective (k-means)", "objective (final)", "resampling steps",
                   "splits", "largest cluster", "seconds"], rows)


def _largest_share(info: dict) -> str:
    """The largest cluster's share of the level's points, flagged when the run found the
    level degenerate (above ``clustering.degenerate_share``)."""
    share = (info.get("sizes") or {}).get("largest_share")
    if share is None:
        return ""
    text = f"{100 * float(share):.1f} %"
    return f"<b title='more than clustering.degenerate_share'>{text} (degenerate)</b>" if info.get("degenerate") else text


def _samples_table(ctx: _Context) -> str:
    samples = ctx.run.meta.get("samples") or {}
    if not samples:
        return "<p>No curated table in run.json.</p>"
    rows = []
    for name, s in samples.items():
        s = s or {}
        mark = " (this report)" if name == ctx.curated_name else ""
        rows.append([_e(name) + mark, _num(s.get("rows")), _num(s.get("target_size")), _num(s.get("expected_rows")),
                     _num(s.get("multiplier")), _e(s.get("strategy", "")), _num(s.get("seed")), _e(s.get("path", ""))])
    return _table(["table", "rows", "target", "expected rows", "multiplier", "strategy", "seed", "path"], rows, left=1)


def _label_table_html(info: Mapping[str, Any]) -> str:
    a, b = info["input"], info["curated"]
    pa, pb = a / max(a.sum(), 1), b / max(b.sum(), 1)
    rows = [[_e(k), _num(int(x)), f"{100 * p:.2f}%", _num(int(y)), f"{100 * q:.2f}%"]
            for k, x, p, y, q in zip(info["keys"], a, pa, b, pb)]
    rows.append(["<b>entropy</b>", "", f"{info['entropy_input']:.3f}", "", f"{info['entropy_curated']:.3f}"])
    return _table([LABEL_COL, "input rows", "input share", "curated rows", "curated share"], rows, left=1)


def _render_html(ctx: _Context, sections: Sequence[_Section]) -> str:
    run = ctx.run
    meta = run.meta
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    facts = [
        ("run folder", _e(run.path)),
        ("format", _e(run.format)),
        ("run.json updated", _e(meta.get("updated", ""))),
        ("input", _e(ctx.input_desc or ctx.input_note or "(not available)")),
        ("input rows", _num(ctx.input_rows if ctx.input_rows is not None else (meta.get("input") or {}).get("n_rows"))),
        ("dimension", _num(ctx.dim)),
        ("curated table", _e(f"{ctx.curated_name} ({ctx.curated_path})" if ctx.curated_name else "(none)")),
        ("curated rows", _num(ctx.curated_summary.get("rows"))),
        ("report generated", _e(generated)),
    ]
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>curation-spark report: {_e(run.path)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>curation-spark report</h1>",
        f"<p class='meta'>{_e(run.path)}</p>",
        _table(None, [[f"<b>{k}</b>", v] for k, v in facts], left=2),
    ]
    general = list(ctx.notes) + [n for n in (ctx.curated_note, ctx.input_note) if n]
    parts += [f"<p class='note'>{_e(n)}</p>" for n in general]
    parts += ["<h2>Levels</h2>", _levels_table(ctx), "<h2>Curated tables</h2>", _samples_table(ctx)]
    for sec in sections:
        parts.append(f"<h2 id='{_e(sec.name.rsplit('.', 1)[0])}'>{_e(sec.title)}</h2>")
        if sec.image_b64:
            parts.append(f"<a href='{_e(sec.figure)}'><img src='data:image/png;base64,{sec.image_b64}' "
                         f"alt='{_e(sec.title)}'></a>")
        if sec.caption:
            parts.append(f"<p class='caption'>{_e(sec.caption)}</p>")
        parts += [f"<p class='note'>{_e(n)}</p>" for n in sec.notes]
        if not sec.image_b64 and not sec.notes:
            parts.append("<p class='note'>Skipped: nothing to draw.</p>")
        parts.append(sec.extra_html)
    config = meta.get("config") or {}
    parts += ["<h2>Configuration</h2>",
              f"<p class='meta'>clustering fingerprint {_e(meta.get('fingerprint', ''))}</p>",
              f"<pre>{_e(json.dumps(config, indent=2, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts)
