"""Checks of a command's paths that need no Spark session, run before one starts.

Starting Spark (and resolving the Delta jars) takes 10-40 s and prints a JVM banner; a
mistyped path should cost a second and one line instead. These checks only look at the
local file system, so they run only when the session will be a local one that reads the
same file system (the CLI on a laptop: ``spark.master`` ``local[...]``, no spark-submit,
no Databricks, no Spark Connect). On a cluster a scheme-less path may mean HDFS or DBFS,
so there the checks stay where they were, after the session starts. The messages are the
ones those later checks give.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from curation_spark.io import paths
from curation_spark.errors import ConfigError, InputError
from curation_spark.io.runfolder import METADATA

if TYPE_CHECKING:
    from curation_spark.config import Config

__all__ = ["applies", "check_config_paths", "check_run_folder"]


def applies(master: str) -> bool:
    """Whether this process will start a local session on this machine's file system."""
    from curation_spark.io.session import _launched_by_spark_submit

    remote = os.environ.get("SPARK_REMOTE") or os.environ.get("SPARK_CONNECT_MODE_ENABLED")
    return (str(master).startswith("local") and not remote and not os.environ.get("DATABRICKS_RUNTIME_VERSION")
            and not _launched_by_spark_submit())


def check_config_paths(config: "Config") -> None:
    """``input.path`` exists; ``output.path`` is not, does not contain and is not inside it."""
    source = config.input.path
    if source:
        local = paths.local_path(source)
        if local is not None and not os.path.exists(local):
            raise InputError(f"input.path: {source} does not exist")
    out = config.output.path
    if source and out:
        paths.check_not_overlapping(out, source)


def check_run_folder(run_path: str) -> None:
    """``--run`` names a run folder (it holds ``run.json``)."""
    local = paths.local_path(run_path)
    if local is not None and not os.path.isfile(os.path.join(local, METADATA)):
        raise ConfigError(f"--run: {run_path} is not a curation-spark run folder (no {METADATA})")
