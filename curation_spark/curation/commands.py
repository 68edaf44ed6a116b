"""The commands as Python functions: validate, cluster, sample, run (= cluster + sample).

Each takes a validated :class:`Config` and an optional SparkSession (the active one is used
where there is one), checks inputs and paths before heavy work, and writes tables into the
run folder. The CLI, the spark-submit jobs and the notebooks all call these.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from curation_spark.config import UNIT_NORM_TOLERANCE, resolve_distance
from curation_spark.curation import dedup as dedup_stage
from curation_spark.curation import hierarchy, sampling
from curation_spark.engine.kmeans import InputCheck
from curation_spark.errors import ConfigError, CurationError
from curation_spark.io import paths
from curation_spark.io.progress import ensure_log_handler
from curation_spark.io.run_metadata import DedupSummary, InputIdentity, LevelStats, SampleSummary
from curation_spark.io.runfolder import RunFolder, open_existing
from curation_spark.io.session import get_spark, require_delta
from curation_spark.io.spark_api import describe_work
from curation_spark.io.tables import (
    EmbeddingStats,
    delta_version,
    has_delta_commit,
    input_location,
    quick_stats,
    read_input,
    to_points,
    validate_embeddings,
    write_table,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import Config

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a command did, for printing and for tests; ``run`` is the open run folder (so
    ``sample`` after ``cluster`` does not open ``run.json`` again)."""

    run_path: str
    stats: EmbeddingStats | None = None
    levels: list[LevelStats] = field(default_factory=list)
    curated_path: str | None = None
    curated_rows: int | None = None
    seconds: float = 0.0
    run: RunFolder | None = None
    #: The distance the hierarchy was built with (``clustering.distance: auto`` resolved).
    distance: str | None = None
    #: The near-duplicate removal the hierarchy was built after (a ``dedup`` section).
    dedup: DedupSummary | None = None


def session_for(config: Config, spark: SparkSession | None = None) -> SparkSession:
    return spark if spark is not None else get_spark(config.spark)


def prepare(config: Config, spark: SparkSession | None = None) -> tuple[Config, SparkSession]:
    """The session for ``config`` and the config with its paths qualified against it
    (:func:`qualified_paths`): every command starts here, so no layer sees a relative path.
    Where nobody configured logging (a script, a notebook), the progress lines show."""
    ensure_log_handler()
    spark = session_for(config, spark)
    return qualified_paths(config, spark), spark


def qualified_paths(config: Config, spark: SparkSession | None) -> Config:
    """``config`` with ``input.path`` and ``output.path`` fully qualified (scheme + absolute
    path, :func:`paths.qualify`); ``spark=None`` qualifies against this machine's file
    system (a local session, before it starts). Idempotent."""
    inp, out = config.input, config.output
    return dataclasses.replace(
        config,
        input=dataclasses.replace(inp, path=paths.qualify(spark, inp.path, "input.path")) if inp.path else inp,
        output=dataclasses.replace(out, path=paths.qualify(spark, out.path, "output.path")) if out.path else out)


def check_output_path(spark: SparkSession, config: Config) -> str:
    """The run folder must not be, contain, or lie inside the input."""
    out = config.output.require_path()
    src = input_location(spark, config.input)
    if src:
        paths.check_not_overlapping(out, src)
    if config.output.format == "delta":
        require_delta(spark, "output.format=delta")
    return out


def input_version(spark: SparkSession, config: Config) -> int | None:
    """The input's Delta version (None for Parquet or when it cannot be read): a resumed run
    checks that its input has not changed since the run started."""
    location = input_location(spark, config.input)
    if location is None or not has_delta_commit(spark, location):
        return None  # Parquet, or a catalog table without a path: no version to compare
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        return delta_version(spark, location)
    except (PySparkException, Py4JJavaError, ImportError) as exc:
        # Never None here: None would switch off the guard that refuses to resume a run
        # over an input that changed since it started.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CurationError(f"input: could not read the Delta version of {location}, which a resumed run "
                            f"compares with the one it started from: {first}") from exc


def load_and_validate(spark: SparkSession, config: Config,
                      raw: DataFrame | None = None) -> tuple[DataFrame, EmbeddingStats]:
    """Read the input table (unless given) and validate it in one pass (errors name column
    and bad-row count)."""
    raw = raw if raw is not None else read_input(spark, config.input)
    describe_work(spark, "validate input")
    stats = validate_embeddings(raw, config.input.id_col, config.input.embedding_col)
    log.info("input: %d rows, dimension %d", stats.n_rows, stats.dim)
    return raw, stats


def validate(config: Config, spark: SparkSession | None = None,
             raw: DataFrame | None = None) -> EmbeddingStats:
    """``curation-spark validate``: check the input table (or the DataFrame ``raw``) only."""
    config, spark = prepare(config, spark)
    _, stats = load_and_validate(spark, config, raw)
    return stats


def input_frame(spark: SparkSession, config: Config, raw: DataFrame | None) -> DataFrame:
    """The input: the DataFrame handed in (it wins over ``input.path`` / ``input.table``,
    which may be unset then), else the configured table."""
    return raw if raw is not None else read_input(spark, config.input)


def content_hash(raw: DataFrame, id_col: str, embedding_col: str) -> int:
    """An order-free hash of a DataFrame's rows (``bit_xor`` of ``xxhash64(id, embedding)``;
    ids are unique, so no two rows cancel): the identity of an input that has no path or
    Delta version, so that a resume over other rows is refused. One aggregate job."""
    from pyspark.sql import functions as F

    row = raw.agg(F.bit_xor(F.xxhash64(F.col(id_col), F.col(embedding_col))).alias("h")).collect()[0]
    return int(row["h"] or 0)


def cluster(config: Config, spark: SparkSession | None = None, overwrite: bool = False,
            raw: DataFrame | None = None, fresh: bool = False) -> RunSummary:
    """``curation-spark cluster``: build (or resume) the hierarchy in ``output.path``.

    A large input whose level 1 reads it first in a barrier stage is not validated in a
    pass of its own: the schema, row count and dimension are checked up front, the values
    (null or repeated ids, null or wrong-sized embeddings, NaN/Inf) while level 1 loads its
    blocks, with the same one-line errors before any iteration or table write. ``raw``: the
    input frame if the caller already read it (``run`` does). ``fresh``: cluster from
    scratch when the folder's hierarchy was fit to another state of the input (it has
    updates, or the input changed): the scheduled full re-cluster of a folder ``update``
    keeps current. A run of this very input is resumed instead (the k-means is
    deterministic: starting again would give the same tables), so a failed weekly run
    still resumes.
    """
    started = time.perf_counter()
    config, spark = prepare(config, spark)
    out = check_output_path(spark, config)
    raw = input_frame(spark, config, raw)
    quick = quick_stats(raw, config.input.id_col, config.input.embedding_col)
    hierarchy.level_clusters(config.clustering, 1, quick.n_rows)  # K above the rows: refused before any work
    input_check = None
    # Whether level 1 checks the values while loading does not depend on the distance; the
    # sampled norms give it one to build the level's parameters with.
    provisional = dataclasses.replace(config.clustering, distance=resolve_distance(
        config.clustering.distance, quick.norm_min, quick.norm_max))
    if config.dedup.enabled:  # dedup reads every norm (zero vectors are refused): one full pass
        raw, stats = load_and_validate(spark, config, raw)
    elif hierarchy.level_one_checks_input(spark, provisional, quick.n_rows, quick.dim):
        stats = quick
        input_check = InputCheck(config.input.id_col, config.input.embedding_col)
        log.info("input: %d rows, dimension %d (values are checked while level 1 loads)", stats.n_rows, stats.dim)
    else:
        raw, stats = load_and_validate(spark, config, raw)
    identity = _identity(spark, config, stats, raw)
    distance = identity.distance or config.clustering.distance
    if config.dedup.enabled:  # before the run folder is touched
        dedup_stage.check_normalisable(to_points(raw, config.input.id_col, config.input.embedding_col),
                                       stats.norm_min, config.input.embedding_col)
    run = RunFolder(spark, out, config.output.format)
    if fresh and (why := _refit_reason(run, identity)):
        log.warning("--fresh: deleting the run in %s to cluster from scratch (%s)", out, why)
        paths.delete(spark, out)
    run.open_for(config, overwrite, identity)
    points = to_points(raw, config.input.id_col, config.input.embedding_col)
    n_points = stats.n_rows
    if config.dedup.enabled:
        points, n_points = _kept_points(spark, config, run, points, stats)
    clustering = dataclasses.replace(config.clustering, distance=distance)
    levels = hierarchy.cluster(run, clustering, points, n_points, stats.dim, input_check)
    describe_work(spark, None)
    return RunSummary(out, stats, levels, seconds=time.perf_counter() - started, run=run, distance=distance,
                      dedup=run.metadata.dedup if run.metadata is not None else None)


def _refit_reason(run: RunFolder, identity: InputIdentity) -> str:
    """Why ``--fresh`` discards the folder's run ("" to resume it)."""
    from curation_spark.io.runfolder import input_changes

    meta = run.load()
    if meta is None:
        return ""
    if meta.updates or meta.pending_update is not None:
        return f"its hierarchy was fit before {len(meta.updates) + (meta.pending_update is not None)} update(s)"
    changed = input_changes(dataclasses.asdict(meta.input), dataclasses.asdict(identity))
    return f"the input changed: {changed}" if changed else ""


def dedup(config: Config, spark: SparkSession | None = None, overwrite: bool = False,
          raw: DataFrame | None = None) -> DedupSummary:
    """``curation-spark dedup``: near-duplicate removal of the input into
    ``<output.path>/dedup/duplicates`` (resumed: an existing dedup of the same config is
    kept). The run folder is then the one ``cluster`` / ``run`` with this ``dedup``
    section continue in."""
    config = dataclasses.replace(config, dedup=dataclasses.replace(config.dedup, enabled=True))
    config, spark = prepare(config, spark)
    out = check_output_path(spark, config)
    raw, stats = load_and_validate(spark, config, input_frame(spark, config, raw))
    points = to_points(raw, config.input.id_col, config.input.embedding_col)
    dedup_stage.check_normalisable(points, stats.norm_min, config.input.embedding_col)  # before the folder is touched
    run = RunFolder(spark, out, config.output.format)
    run.open_for(config, overwrite, _identity(spark, config, stats, raw))
    _kept_points(spark, config, run, points, stats)
    assert run.metadata is not None and run.metadata.dedup is not None
    return run.metadata.dedup


def _identity(spark: SparkSession, config: Config, stats: EmbeddingStats,
              raw: DataFrame | None = None) -> InputIdentity:
    distance = chosen_distance(config, stats)
    handed_in = raw is not None and not config.input.path and not config.input.table
    return InputIdentity(n_rows=stats.n_rows, dim=stats.dim, delta_version=input_version(spark, config),
                         distance=distance if config.clustering.distance == "auto" else None,
                         content_hash=content_hash(raw, config.input.id_col, config.input.embedding_col)  # type: ignore[arg-type]  # handed_in: raw is set
                         if handed_in else None)


def _kept_points(spark: SparkSession, config: Config, run: RunFolder, points: DataFrame,
                 stats: EmbeddingStats) -> tuple[DataFrame, int]:
    """The points without their near-duplicates (dedup run first unless the run folder
    has it), and how many there are."""
    from pyspark.sql import functions as F

    from curation_spark.io.tables import POINT_ID, read_table

    meta = run.metadata
    assert meta is not None
    target = run.duplicates_path()
    if meta.dedup is None:  # (zero vectors were refused by the caller, before the folder was opened)
        _, summary = dedup_stage.find_duplicates(spark, points, stats.n_rows, stats.dim, config.dedup, target,
                                                 run.format)
        meta.dedup = summary
        run.save()
    else:
        log.info("dedup: already complete in %s (%d of %d points removed), reusing it", run.path, meta.dedup.removed,
                 meta.dedup.points_in)
    removed = read_table(spark, target, run.format).select(F.col("id").alias(POINT_ID))
    return points.join(removed, POINT_ID, "left_anti"), meta.dedup.kept


def chosen_distance(config: Config, stats: EmbeddingStats) -> str:
    """``clustering.distance`` with ``auto`` resolved from the input's measured norms (logged)."""
    requested = config.clustering.distance
    distance = resolve_distance(requested, stats.norm_min, stats.norm_max)
    if requested == "auto":
        measured = (f"norms {stats.norm_min:.4f}..{stats.norm_max:.4f} over {stats.norm_rows} rows"
                    if stats.norm_min is not None else "norms not measured")
        log.info("clustering.distance: auto -> %s (%s; cosine when all are within %.2g of 1)", distance, measured,
                 UNIT_NORM_TOLERANCE)
    return distance


def sample(config: Config, spark: SparkSession | None = None, run_path: str | None = None,
           table_name: str | None = None, input_df: DataFrame | None = None,
           run_folder: RunFolder | None = None) -> RunSummary:
    """``curation-spark sample``: balanced sampling over an existing hierarchy.

    Writes ``<run>/<table_name>`` atomically and returns its row count. ``run_folder``: the
    run folder ``cluster`` returned (else ``run_path`` / ``output.path`` is opened).
    """
    started = time.perf_counter()
    config, spark = prepare(config, spark)
    sc = config.sampling
    if sc.target_size is None:
        raise ConfigError("sampling.target_size: required (how many samples the curated set should hold)")
    run = run_folder if run_folder is not None else open_existing(spark, run_path or config.output.require_path())
    run.require_no_pending_update()
    path = run.path
    n_levels = run.n_levels_done()
    expected = run.config.clustering.n_levels
    if n_levels == 0 or n_levels < expected:
        raise ConfigError(f"--run: {path} has {n_levels} of {expected} levels complete; "
                          "run `curation-spark cluster` first")
    name = table_name or sc.table_name
    if sc.keep_columns and input_df is None:
        if not run.config.input.path and not run.config.input.table:
            raise ConfigError(f"sampling.keep_columns: the run in {paths.display(run.path)} was made from a DataFrame; "
                              "pass that DataFrame again to carry its columns (Run.sample(..., df=df))")
        input_df = read_input(spark, run.config.input)
    params = sampling.SamplingParams(sc.target_size, sc.multiplier, sc.strategy, sc.seed)
    selection, plan = sampling.curate(run, n_levels, params)
    previous = run.metadata.samples.get(name) if run.metadata is not None else None
    if previous is not None and (previous.target_size, previous.multiplier, previous.strategy, previous.seed) != (
            sc.target_size, sc.multiplier, sc.strategy, sc.seed):
        log.warning("sampling: replacing the curated table %s (target %d, multiplier %d, strategy %s, seed %d: %d "
                    "rows) with target %d, multiplier %d, strategy %s, seed %d; set sampling.table_name to keep both",
                    name, previous.target_size, previous.multiplier, previous.strategy, previous.seed, previous.rows,
                    sc.target_size, sc.multiplier, sc.strategy, sc.seed)
    if sc.keep_columns:
        selection = sampling.with_input_columns(selection, input_df, run.config.input.id_col, sc.keep_columns)  # type: ignore[arg-type]  # read above if None
    target = run.table_path(name)
    describe_work(spark, f"sampling · write {name}")
    write_table(selection, target, run.format)
    from curation_spark.io.tables import read_table

    # The written table's own count (Delta: from the commit's statistics, Parquet: the
    # footers): what readers will see, without recomputing the selection.
    n_rows = read_table(spark, target, run.format).count()
    run.mark_sample(name, SampleSummary(**plan, rows=n_rows, path=target,
                                        seconds=round(time.perf_counter() - started, 1)))
    if n_rows < sc.target_size:
        log.warning("curated table %s holds %d rows, fewer than sampling.target_size=%d: every point at most "
                    "sampling.multiplier=%d times is all there is", paths.display(target), n_rows, sc.target_size,
                    sc.multiplier)
    log.info("curated table %s: %d rows (target %d)", paths.display(target), n_rows, sc.target_size)
    describe_work(spark, None)
    return RunSummary(path, None, [], target, n_rows, time.perf_counter() - started, run=run)


def run(config: Config, spark: SparkSession | None = None, overwrite: bool = False,
        fresh: bool = False, raw: DataFrame | None = None) -> RunSummary:
    """``curation-spark run``: cluster (or resume), then sample into ``sampling.table_name``;
    one read of the input, one open of the run folder."""
    if config.sampling.target_size is None:
        raise ConfigError("sampling.target_size: required for `run` (or use `cluster` alone)")
    config, spark = prepare(config, spark)
    raw = input_frame(spark, config, raw)
    check_keep_columns(raw, config)
    summary = cluster(config, spark, overwrite=overwrite, raw=raw, fresh=fresh)
    sampled = sample(config, spark, input_df=raw, run_folder=summary.run)
    summary.curated_path, summary.curated_rows = sampled.curated_path, sampled.curated_rows
    summary.seconds += sampled.seconds
    return summary


def check_keep_columns(raw: DataFrame, config: Config) -> None:
    """Fail before clustering if a column to carry into the curated table is missing."""
    for col in config.sampling.keep_columns:
        if col not in raw.columns:
            raise ConfigError(f"sampling.keep_columns: column {col!r} is not in the input table "
                              f"(columns: {', '.join(raw.columns)})")


def write_synthetic(spark: SparkSession, table, path: str, fmt: str = "delta", n_files: int = 4) -> None:
    """Write a generated Arrow table (from :mod:`curation_spark.synth`) as a Spark table."""
    df = spark.createDataFrame(table).repartition(n_files)
    write_table(df, path, fmt)


def write_mixture(spark: SparkSession, path: str, n: int, dim: int, n_components: int, *, seed: int = 0,
                  alpha: float = 1.0, n_files: int = 4, fmt: str = "delta", partition_by_shard: bool = False) -> None:
    """Generate the long-tailed mixture of :func:`synth.iter_gaussian_mixture_batches` on the
    executors, one contiguous id range per file, and write it as a table.

    Memory is bounded by one batch per task whatever ``n`` is, and the rows equal
    ``synth.make_gaussian_mixture(n, ...)``'s. With ``partition_by_shard`` the table is
    partitioned by an extra ``shard`` column (the file index).
    """
    import pyarrow as pa

    from curation_spark import synth

    # Argument errors (n, dim, ...) raise here, on the driver, before any job starts.
    synth.iter_gaussian_mixture_batches(n, dim, n_components, seed=seed, alpha=alpha)
    n_files = max(1, min(int(n_files), n))
    batch_rows = max(1, min(65_536, (1 << 26) // dim))  # <= 256 MB of float32 per batch

    def generate(batches):
        for batch in batches:
            for shard in batch.column(0).to_pylist():
                lo, hi = n * shard // n_files, n * (shard + 1) // n_files
                for out in synth.iter_gaussian_mixture_batches(hi, dim, n_components, seed=seed, alpha=alpha,
                                                               batch_size=batch_rows, start=lo):
                    yield pa.RecordBatch.from_arrays(
                        [*out.columns, pa.array(np.full(out.num_rows, shard, np.int32))],
                        names=[*out.schema.names, "shard"])

    schema = "id long, embedding array<float>, label int, shard int"
    df = spark.range(0, n_files, 1, n_files).mapInArrow(generate, schema)
    if not partition_by_shard:
        df = df.drop("shard")
    write_table(df, path, fmt, partition_by=["shard"] if partition_by_shard else None)
