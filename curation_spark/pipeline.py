"""The commands as Python functions (validate, dedup, cluster, sample, run, update): the public entry
point for notebooks and scripts, ``from curation_spark import pipeline``.

The code lives in :mod:`curation_spark.curation.commands`; this module re-exports it so
that users' notebooks keep one stable import whatever the package's folders look like.
"""
from curation_spark.config import Config, load_config
from curation_spark.curation.commands import (
    RunSummary,
    check_keep_columns,
    check_output_path,
    cluster,
    dedup,
    input_version,
    load_and_validate,
    prepare,
    qualified_paths,
    run,
    sample,
    session_for,
    validate,
    write_mixture,
    write_synthetic,
)
from curation_spark.curation.update import UpdateResult, update

__all__ = ["RunSummary", "Config", "load_config", "validate", "dedup", "cluster", "sample", "run", "update",
           "UpdateResult", "write_synthetic",
           "write_mixture", "load_and_validate", "input_version", "check_output_path", "check_keep_columns",
           "session_for", "prepare", "qualified_paths"]
