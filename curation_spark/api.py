"""The Python API a notebook reaches for: ``import curation_spark as cs``.

Functions that take a :class:`~curation_spark.config.Config` (and optionally a DataFrame
in hand instead of ``input.path`` / ``input.table``) and return a :class:`Run`, the
read-only handle of a run folder. The run folder stays the unit of state (resumable,
readable by any Delta client); the handle only reads it and calls the commands that the
CLI, the jobs and the notebooks share (:mod:`curation_spark.curation.commands`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from curation_spark import tracking
from curation_spark.config import Config
from curation_spark.curation import commands
from curation_spark.errors import ConfigError
from curation_spark.io import paths
from curation_spark.io.runfolder import RunFolder, open_existing

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.curation.commands import RunSummary
    from curation_spark.curation.update import UpdateResult
    from curation_spark.io.run_metadata import LevelStats, RunMetadata
    from curation_spark.io.tables import EmbeddingStats

__all__ = ["Run", "session", "validate", "dedup", "cluster", "run", "open_run"]


def session(config: Config | None = None) -> SparkSession:
    """The SparkSession the commands use: the active one (Databricks, spark-submit, a
    notebook) or a Spark Connect one (``SPARK_REMOTE``), else a local Delta-enabled session
    started from ``config.spark``.

    Examples
    --------
    >>> import curation_spark as cs
    >>> spark = cs.session()
    >>> spark.range(3).count()
    3
    """
    from curation_spark.io.session import get_spark

    return get_spark((config or Config()).spark)


def validate(config: Config, df: DataFrame | None = None, *,
             spark: SparkSession | None = None) -> EmbeddingStats:
    """Check the input (``df``, else ``input.path`` / ``input.table``) in one pass: rows,
    dimension, and one :class:`~curation_spark.errors.InputError` line for the first
    problem (missing column, null or repeated ids, ragged embeddings, NaN/Inf).

    Examples
    --------
    >>> stats = cs.validate(cs.Config(), df)  # df: id and embedding columns
    >>> stats.n_rows, stats.dim
    (2000, 8)
    """
    _one_input(config, df)
    return commands.validate(config, spark, raw=df)


def dedup(config: Config, df: DataFrame | None = None, *, spark: SparkSession | None = None,
          overwrite: bool = False) -> Run:
    """Near-duplicate removal into ``<output.path>/dedup/duplicates`` (see ``curation-spark
    dedup``); returns the run folder, which ``cluster`` / ``run`` with the same config
    continue in.

    Examples
    --------
    >>> from pyspark.sql import functions as F
    >>> copies = df.limit(10).withColumn("id", F.col("id") + 1_000_000)  # ten exact copies
    >>> config = cs.Config.from_dict({"output": {"path": "runs/dedup"}, "dedup": {"threshold": 0.999}})
    >>> run = cs.dedup(config, df.unionByName(copies))
    >>> run.dedup_pairs().count()
    10
    """
    _one_input(config, df)
    spark = spark or session(config)
    commands.dedup(config, spark, overwrite=overwrite, raw=df)
    return open_run(commands.qualified_paths(config, spark).output.require_path(), spark=spark)


def cluster(config: Config, df: DataFrame | None = None, *, spark: SparkSession | None = None,
            overwrite: bool = False, fresh: bool = False, mlflow: bool | None = None) -> Run:
    """Build (or resume) the hierarchy in ``output.path`` from ``df`` (a DataFrame with the
    configured id and embedding columns, ``id`` and ``embedding`` by default) or from
    ``input.path`` / ``input.table``.

    A DataFrame's rows are recorded by count, dimension and an order-free content hash, so
    a re-run with the same rows resumes and one with other rows is refused (``overwrite``
    starts again). A run made from a DataFrame has no table to ``update`` from: run it
    again with the new DataFrame instead.

    Examples
    --------
    >>> config = cs.Config.from_dict({"output": {"path": "runs/nb"},
    ...                               "clustering": {"n_levels": 2, "n_clusters": [100, 10]}})
    >>> run = cs.cluster(config, df)
    >>> [lv.n_clusters for lv in run.levels]
    [100, 10]
    >>> cs.cluster(config, df.limit(1500))  # other rows, same folder
    Traceback (most recent call last):
    ...
    curation_spark.errors.ConfigError: ...
    """
    config = _prepared(config, df, mlflow)
    spark = spark or session(config)
    summary = commands.cluster(config, spark, overwrite=overwrite, raw=df, fresh=fresh)
    return _tracked_handle(config, summary, spark, "cluster")


def run(config: Config, df: DataFrame | None = None, *, spark: SparkSession | None = None,
        overwrite: bool = False, fresh: bool = False, mlflow: bool | None = None) -> Run:
    """Cluster (or resume), then sample ``sampling.target_size`` rows into
    ``sampling.table_name`` (default ``curated``): the whole method. ``df`` as for
    :func:`cluster`.

    Examples
    --------
    >>> config = cs.Config.from_dict({"output": {"path": "runs/nb"}, "sampling": {"target_size": 500},
    ...                               "clustering": {"n_levels": 2, "n_clusters": [100, 10]}})
    >>> run = cs.run(config, df)  # the hierarchy of runs/nb resumed if it is there, then sampled
    >>> run.curated().count(), run.tables
    (500, {'curated': 500})
    """
    config = _prepared(config, df, mlflow)
    spark = spark or session(config)
    summary = commands.run(config, spark, overwrite=overwrite, fresh=fresh, raw=df)
    return _tracked_handle(config, summary, spark, "run")


def _tracked_handle(config: Config, summary: RunSummary, spark: SparkSession, command: str) -> Run:
    """The handle of the folder a command wrote, logged to MLflow when the config asks."""
    handle = Run(summary.run) if summary.run is not None else open_run(summary.run_path, spark=spark)
    tracking.track(config, handle.path, spark, command=command)
    return handle


def _prepared(config: Config, df: DataFrame | None, mlflow: bool | None) -> Config:
    """The config a call runs with (``mlflow`` overrides ``tracking.mlflow``); one line, before
    any work, for a DataFrame given beside a configured input or for tracking without MLflow."""
    _one_input(config, df)
    if mlflow is not None:
        config = config.replace(**{"tracking.mlflow": bool(mlflow)})
    tracking.check_available(config)
    return config


def _one_input(config: Config, df: DataFrame | None) -> None:
    """A DataFrame replaces ``input.path`` / ``input.table``; both at once is refused, since
    the run would record one source and read another."""
    if df is not None and (config.input.path or config.input.table):
        key = "input.path" if config.input.path else "input.table"
        raise ConfigError(f"{key} is set and a DataFrame was given: pass one input (drop {key} from the config "
                          "to curate the DataFrame, or call without df to read the table)")


def open_run(path: str, *, spark: SparkSession | None = None) -> Run:
    """The run folder at ``path`` (made by ``run``, ``cluster`` or the CLI); one line when
    it is none.

    Examples
    --------
    >>> run = cs.open_run("runs/nb")
    >>> run.centroids(1).count()
    100
    >>> cs.open_run("runs/none")
    Traceback (most recent call last):
    ...
    curation_spark.errors.ConfigError: open_run: .../runs/none is not a curation-spark run folder (no run.json)
    """
    return Run(open_existing(spark or session(), path, key="open_run"))


class Run:
    """The handle of one run folder: what it holds (read-only attributes) and what can be
    done with it (methods). Tables come back as DataFrames; nothing is collected.

    Examples
    --------
    >>> run = cs.open_run("runs/nb")
    >>> run.levels[0].n_clusters, run.distance
    (100, 'l2')
    >>> run.sample(3000, multiplier=2, strategy="c").count()  # 2000 rows, each at most twice
    3000
    >>> sorted(run.tables.items())
    [('curated', 500), ('curated_3000_c_m2_s0', 3000)]
    >>> run.assign(df).columns
    ['id', 'cluster_path', 'distance']
    >>> run.report().endswith("report.html")
    True
    """

    def __init__(self, folder: RunFolder) -> None:
        if folder.metadata is None and folder.load() is None:
            raise ConfigError(f"{paths.display(folder.path)} is not a curation-spark run folder (no run.json)")
        self._folder = folder

    def __repr__(self) -> str:
        levels = ", ".join(str(lv.n_clusters) for lv in self.levels)
        return f"Run({paths.display(self.path)!r}, levels [{levels}], tables {sorted(self.tables)})"

    # ------------------------------------------------------------------ what it holds
    @property
    def path(self) -> str:
        """The run folder, qualified (``file:/...``, ``s3a://...``)."""
        return self._folder.path

    @property
    def config(self) -> Config:
        """The config the run was made with (paths qualified)."""
        return self._folder.config

    @property
    def levels(self) -> list[LevelStats]:
        """Per-level statistics of the completed levels, level 1 first."""
        return [self._folder.level_stats(level)  # type: ignore[misc]  # completed levels are recorded
                for level in range(1, self._folder.n_levels_done() + 1)]

    @property
    def distance(self) -> str:
        """The distance the hierarchy was built with (``auto`` resolved): ``l2`` or ``cosine``."""
        meta = self._folder.metadata
        assert meta is not None
        return meta.input.distance or meta.config.clustering.distance

    @property
    def metadata(self) -> RunMetadata:
        """Everything ``run.json`` records, typed: the input's identity, per-level statistics,
        the curated tables (``samples``), the dedup, the updates."""
        meta = self._folder.metadata
        assert meta is not None
        return meta

    @property
    def tables(self) -> dict[str, int]:
        """The curated tables written so far and their rows."""
        meta = self._folder.metadata
        assert meta is not None
        return {name: s.rows for name, s in meta.samples.items()}

    # ------------------------------------------------------------------ tables
    def centroids(self, level: int) -> DataFrame:
        """Level ``level``'s ``cluster_id, centroid, size, flat_size, parent_id``."""
        self._check_level(level)
        return self._folder.read_centroids(level)

    def assignments(self, level: int) -> DataFrame:
        """Level ``level``'s ``point_id, cluster_id, distance`` (level 1: the input's ids)."""
        self._check_level(level)
        return self._folder.read_assignments(level)

    def curated(self, table: str | None = None) -> DataFrame:
        """A curated table as ``id, copy, cluster_id, ...``: ``table``, else the run's own
        (``sampling.table_name``, what ``cs.run`` writes), else the first one written."""
        from curation_spark.io.tables import read_table

        names = list(self.tables)
        if not names:
            raise ConfigError(f"{paths.display(self.path)}: no curated table yet (Run.sample or cs.run)")
        own = self.config.sampling.table_name
        name = table or (own if own in self.tables else names[0])
        if name not in self.tables:
            raise ConfigError(f"table {name!r}: not a curated table of this run (it has: {', '.join(names)})")
        return read_table(self._folder.spark, self._folder.table_path(name), self._folder.format)

    def dedup_pairs(self) -> DataFrame | None:
        """``id, kept_id, similarity`` of the near-duplicates removed before clustering,
        or None for a run without a ``dedup`` section."""
        from curation_spark.io.tables import read_table

        meta = self._folder.metadata
        if meta is None or meta.dedup is None:
            return None
        return read_table(self._folder.spark, self._folder.duplicates_path(), self._folder.format)

    # ------------------------------------------------------------------ work
    def sample(self, target_size: int, *, multiplier: int = 1, strategy: str = "r", seed: int = 0,
               table: str | None = None, keep_columns: Sequence[str] = (),
               df: DataFrame | None = None) -> DataFrame:
        """Balanced sampling over this hierarchy into a new table of the run folder (as
        ``curation-spark sample``; no re-clustering); returns the written table. ``df``:
        the input DataFrame, for ``keep_columns`` of a run made from one."""
        from curation_spark.config import sampling_only_config

        config = sampling_only_config(target_size, multiplier, strategy, seed, keep_columns)
        name = table or f"curated_{target_size}_{strategy}_m{multiplier}_s{seed}"
        summary = commands.sample(config, self._folder.spark, table_name=name, run_folder=self._folder,
                                  input_df=df)
        assert summary.curated_path is not None
        tracking.track(self.config, self.path, self._folder.spark, command="sample")
        return self.curated(name)

    def assign(self, df: DataFrame) -> DataFrame:
        """Each row of ``df`` (the configured id and embedding columns) placed in the
        hierarchy without moving it: the id, ``cluster_path`` (array<long>: the cluster at
        levels 1..L) and ``distance`` to its level-1 centroid. The rule of ``update``
        (nearest level-1 centroid, then the parents); nothing is written."""
        from curation_spark.curation.assign import assign_down

        return assign_down(self._folder, df)

    def update(self, config: Config | None = None) -> UpdateResult:
        """Bring the run up to date with its input table's new and deleted rows (``curation-spark
        update``); a run made from a DataFrame has no table to read them from. ``config``:
        the run's own by default (another one is refused unless its clustering is the same)."""
        from curation_spark.curation.update import update

        config = config or self.config
        tracking.check_available(config)
        result = update(config, self._folder.spark)
        self._folder.load()  # the handle shows the updated run
        tracking.track(config, self.path, self._folder.spark, command="update")
        return result

    def report(self, out: str | None = None, table: str | None = None) -> str:
        """Write the HTML report into ``out`` (default ``<run>/report``) about the curated
        table ``table`` (default: the newest); returns the ``report.html`` path."""
        from curation_spark.report import write_report

        return write_report(self.path, out_dir=out, table=table, spark=self._folder.spark)

    def _check_level(self, level: int) -> None:
        done = self._folder.n_levels_done()
        if not isinstance(level, int) or not 1 <= level <= done:
            raise ConfigError(f"level {level!r}: this run has levels 1..{done}")
