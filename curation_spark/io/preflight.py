"""Checks of a command's paths that need no Spark session, run before one starts.

Starting Spark (and resolving the Delta jars) takes 10-40 s and prints a JVM banner; a
mistyped path should cost a second and one line instead. These checks only look at the
local file system, so they run only when the session will be a local one that reads the
same file system (the CLI on a laptop: ``spark.master`` ``local[...]``, no spark-submit,
no Databricks, no Spark Connect). On a cluster a scheme-less path may mean HDFS or DBFS,
so there the checks stay where they were, after the session starts. The messages are the
ones those later checks give.

For a local Parquet or Delta input the columns are checked too, from the table's schema
alone (:mod:`curation_spark.io.local_schema`: one footer or the Delta log, no data); a
table whose files that reader does not understand is left to Spark's checks.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from curation_spark.errors import ConfigError, InputError
from curation_spark.io import local_schema, paths
from curation_spark.io.runfolder import METADATA

if TYPE_CHECKING:
    from curation_spark.config import Config

__all__ = ["applies", "check_config_paths", "check_input_schema", "check_run_folder"]

log = logging.getLogger(__name__)


def applies(master: str) -> bool:
    """Whether this process will start a local session on this machine's file system."""
    from curation_spark.io.session import _launched_by_spark_submit

    remote = os.environ.get("SPARK_REMOTE") or os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    return (str(master).startswith("local") and not remote and not os.environ.get("DATABRICKS_RUNTIME_VERSION")
            and not _launched_by_spark_submit())


def check_config_paths(config: Config) -> None:
    """``input.path`` exists; ``output.path`` is not, does not contain and is not inside it."""
    source = config.input.path
    if source:
        local = paths.local_path(source)
        if local is not None and not os.path.exists(local):
            raise InputError(f"input.path: {paths.display(source)} does not exist")
    out = config.output.path
    if source and out:
        paths.check_not_overlapping(out, source)


def check_input_schema(config: Config, keep_columns: bool = False) -> None:
    """The input's id and embedding columns exist and have usable types, and (``keep_columns``:
    the commands that carry them, i.e. ``run``) ``sampling.keep_columns`` exist, read from a
    local table's footer or Delta log; a data file that is not Parquet, which Spark would
    fail on, is named. Never refuses a table it cannot read itself: that is left to Spark."""
    from curation_spark.io.tables import check_column_kinds

    source = config.input.path
    local = paths.local_path(source) if source and not config.input.table else None
    if local is None or not os.path.exists(local):
        return
    conf = {k: str(v).strip().lower() for k, v in config.spark.conf.items()}
    try:
        schema = local_schema.read_local_schema(
            local, config.input.format, ignore_corrupt_files=conf.get("spark.sql.files.ignoreCorruptFiles") == "true",
            case_sensitive=conf.get("spark.sql.caseSensitive") == "true",
            merge_schema=conf.get("spark.sql.parquet.mergeSchema") == "true")
    except local_schema.NoTable:
        raise InputError(f"input.path: {paths.display(source)} holds no table "  # type: ignore[arg-type]  # set (local is)
                         "(no data files and no _delta_log)") from None
    except local_schema.NotParquetFile as exc:
        where = paths.display(f"{source.rstrip('/')}/{exc.relative}"  # type: ignore[union-attr]  # set (local is)
                              if exc.relative else source)  # type: ignore[arg-type]  # set (local is)
        raise InputError(f"input.path: {where} is not a Parquet file (Spark reads every file in the folder whose "
                         "name does not start with _ or .)") from None
    except local_schema.SchemaUnknown as exc:  # anything unexpected in the files: Spark's checks will speak
        log.debug("preflight: schema of %s not read (%s); its columns are checked once Spark reads it", source, exc)
        return
    log.debug("preflight: %s schema of %s from %s: %s", schema.format, source, schema.source, schema.names)
    if keep_columns:
        for col in config.sampling.keep_columns:  # the message of commands.check_keep_columns
            if col not in schema.names:
                raise ConfigError(f"sampling.keep_columns: column {col!r} is not in the input table "
                                  f"(columns: {', '.join(schema.names)})")
    check_column_kinds(schema.columns, config.input.id_col, config.input.embedding_col)


def check_run_folder(run_path: str) -> None:
    """``--run`` names a run folder (it holds ``run.json``)."""
    local = paths.local_path(run_path)
    if local is not None and not os.path.isfile(os.path.join(local, METADATA)):
        raise ConfigError(f"--run: {run_path} is not a curation-spark run folder (no {METADATA})")
