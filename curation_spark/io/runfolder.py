"""The run folder: where one run's tables and its metadata (``run.json``) live.

Layout (``output.path``)::

    run.json                      resolved config, its fingerprint, the input's identity, per-level
                                  statistics, curated tables (typed: :mod:`run_metadata`)
    level_<l>/centroids           cluster_id, centroid, size, flat_size, parent_id
    level_<l>/assignments         point_id, cluster_id, distance
    <sampling.table_name>         curated selection (default ``curated``)
    dedup/duplicates              id, kept_id, similarity (a run with a ``dedup`` section)
    _update/                      an ``update``'s staged tables until they are committed

``run.json`` is rewritten atomically after each completed step, so a run that is killed
resumes after its last completed level; a different clustering config against an existing
folder is refused unless ``overwrite`` is given.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from curation_spark.errors import ConfigError, CurationError
from curation_spark.io import paths
from curation_spark.io.run_metadata import InputIdentity, LevelStats, RunMetadata, SampleSummary

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import Config

log = logging.getLogger(__name__)

METADATA = "run.json"
#: The table of the points a dedup step removed, inside the run folder.
DUPLICATES = "dedup/duplicates"
#: Where ``update`` stages its tables before committing them.
UPDATE_STAGING = "_update"


class RunFolder:
    """Paths and metadata of one run, backed by ``run.json`` (typed: :mod:`run_metadata`)."""

    def __init__(self, spark: SparkSession, path: str, fmt: str) -> None:
        self.spark = spark
        self.path = path.rstrip("/")
        self.format = fmt
        self.metadata: RunMetadata | None = None

    # ------------------------------------------------------------------ paths
    def level_dir(self, level: int) -> str:
        return paths.join(self.path, f"level_{level}")

    def centroids_path(self, level: int) -> str:
        return paths.join(self.level_dir(level), "centroids")

    def assignments_path(self, level: int) -> str:
        return paths.join(self.level_dir(level), "assignments")

    def table_path(self, name: str) -> str:
        return paths.join(self.path, name)

    def duplicates_path(self) -> str:
        """The near-duplicates removed before clustering (``dedup/duplicates``)."""
        return paths.join(self.path, DUPLICATES)

    def update_staging_path(self) -> str:
        """Where ``update`` stages the tables it is about to commit (``_update``)."""
        return paths.join(self.path, UPDATE_STAGING)

    # ------------------------------------------------------------------ tables
    def read_centroids(self, level: int) -> DataFrame:
        """Level ``level``'s ``cluster_id, centroid, size, flat_size, parent_id`` table."""
        from curation_spark.io.tables import read_table

        return read_table(self.spark, self.centroids_path(level), self.format)

    def read_assignments(self, level: int) -> DataFrame:
        """Level ``level``'s ``point_id, cluster_id, distance`` table."""
        from curation_spark.io.tables import read_table

        return read_table(self.spark, self.assignments_path(level), self.format)

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> Config:
        """The config the run was made with, validated like a fresh one."""
        return self._require().config

    def _require(self) -> RunMetadata:
        if self.metadata is None:
            raise CurationError(f"{self.path}: no run metadata loaded (open the run folder first)")
        return self.metadata

    def load(self) -> RunMetadata | None:
        where = paths.join(self.path, METADATA)
        text = paths.read_text(self.spark, where)
        if text is None:
            return None
        self.metadata = RunMetadata.from_json(text, where)
        self.format = self.metadata.output_format
        return self.metadata

    def save(self) -> None:
        meta = self._require()
        meta.updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        paths.write_text_atomic(self.spark, paths.join(self.path, METADATA), meta.to_json())

    def open_for(self, config: Config, overwrite: bool, input_identity: InputIdentity | None = None) -> None:
        """Start or resume a run of ``config`` here; refuse a different config, or an input
        that changed since the run started (``input_identity``: rows, dimension, Delta
        version, resolved distance), unless overwriting."""
        fingerprint = config.clustering_fingerprint()
        identity = input_identity or InputIdentity()
        existing = self.load()
        if existing is not None and not overwrite:
            self.require_no_pending_update()
        refusal = self._refusal(existing, fingerprint, identity, config)
        if refusal:
            if not overwrite:
                raise ConfigError(refusal)
            log.warning("--overwrite: deleting %s (%s)", self.path, refusal)
            paths.delete(self.spark, self.path)
            existing = None
        if existing is None:
            self.metadata = RunMetadata(fingerprint=fingerprint, config=config, output_format=self.format,
                                        input=identity)
        else:
            existing.config = config
            existing.fingerprint = fingerprint
            recorded = dataclasses.asdict(existing.input)
            existing.input = InputIdentity(**{k: v if v is not None else recorded[k]
                                              for k, v in dataclasses.asdict(identity).items()})
        self.save()

    def _refusal(self, existing: RunMetadata | None, fingerprint: str, identity: InputIdentity,
                 config: Config) -> str:
        """Why this folder cannot take (or resume) the run, or "" if it can."""
        if existing is None:
            if paths.exists(self.spark, self.path) and paths.has_data_files(self.spark, self.path):
                return (f"output.path: {paths.display(self.path)} exists and is not a curation-spark run folder; "
                        "choose an empty or new folder (or pass --overwrite to replace it)")
            return ""
        if existing.fingerprint != fingerprint:
            differences = config_differences(existing.config, config)
            if differences:
                return (f"output.path: {paths.display(self.path)} holds a run with a different clustering config "
                        f"({'; '.join(differences)}); choose another output.path or pass --overwrite to replace it")
            # Same settings, spelled differently (a path written relative before paths were
            # qualified): the run is this config's; the new fingerprint is recorded.
        changed = input_changes(dataclasses.asdict(existing.input), dataclasses.asdict(identity))
        if changed:
            return (f"input.path: the input changed since the run in {paths.display(self.path)} started ({changed}); "
                    "its levels would not match the input any more: pass --overwrite to start again, "
                    "or choose another output.path")
        return ""

    def require_no_pending_update(self) -> None:
        """Refuse to work on a run whose last ``update`` was interrupted while committing
        (its tables are part old, part new until ``update`` finishes it)."""
        pending = self.metadata.pending_update if self.metadata is not None else None
        if pending is not None:
            raise ConfigError(f"{paths.display(self.path)}: an update (input version {pending.from_version} -> "
                              f"{pending.to_version}) was interrupted while committing its tables; "
                              "run `curation-spark update` with the same config to finish it")

    def level_stats(self, level: int) -> LevelStats | None:
        """The level's recorded statistics, or None if it was never recorded."""
        return self._require().levels.get(level) if self.metadata is not None else None

    def level_done(self, level: int) -> bool:
        stats = self.level_stats(level)
        return stats is not None and stats.complete

    def n_levels_done(self) -> int:
        n = 0
        while self.level_done(n + 1):
            n += 1
        return n

    def mark_level(self, stats: LevelStats) -> None:
        stats.status = "complete"
        self._require().levels[stats.level] = stats
        self.save()

    def mark_sample(self, name: str, summary: SampleSummary) -> None:
        self._require().samples[name] = summary
        self.save()


def config_differences(recorded: Config, current: Config) -> list[str]:
    """The settings that decide the hierarchy and differ between a run's recorded config
    and a new one (``section.key: old -> new``); two spellings of one folder are equal."""
    from curation_spark.config import fingerprint_differences

    return fingerprint_differences(recorded, current, same_path=lambda a, b: paths.normalise(a) == paths.normalise(b))


def input_changes(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between the input a run recorded and the input now ("" if nothing);
    keys missing on either side (older run folders, Parquet inputs) are not compared."""
    diffs = [f"{key} {recorded[key]} -> {current[key]}" for key in sorted(current)
             if recorded.get(key) is not None and current[key] is not None and recorded[key] != current[key]]
    return ", ".join(diffs)


def open_existing(spark: SparkSession, path: str, key: str = "--run") -> RunFolder:
    """A finished (or partly finished) run folder, for ``sample`` and ``report``
    (``path`` as the user gave it: qualified here, :func:`paths.qualify`; ``key`` names it
    in errors)."""
    folder = RunFolder(spark, paths.qualify(spark, path, key), "delta")
    if folder.load() is None:
        raise ConfigError(f"{key}: {paths.display(folder.path)} is not a curation-spark run folder (no {METADATA})")
    return folder
