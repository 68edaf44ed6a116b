"""The run folder: where one run's tables and its metadata (``run.json``) live.

Layout (``output.path``)::

    run.json                      resolved config, its fingerprint, per-level status + metrics
    level_<l>/centroids           cluster_id, centroid, size, flat_size, parent_id
    level_<l>/assignments         point_id, cluster_id, distance
    <sampling.table_name>         curated selection (default ``curated``)

``run.json`` is rewritten atomically after each completed step, so a run that is killed
resumes after its last completed level; a different clustering config against an existing
folder is refused unless ``overwrite`` is given.
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from curation_spark.io import paths
from curation_spark.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from curation_spark.config import Config

log = logging.getLogger(__name__)

METADATA = "run.json"


class RunFolder:
    """Paths and metadata of one run, backed by ``run.json``."""

    def __init__(self, spark: "SparkSession", path: str, fmt: str) -> None:
        self.spark = spark
        self.path = path.rstrip("/")
        self.format = fmt
        self.meta: dict[str, Any] = {}

    # ------------------------------------------------------------------ paths
    def level_dir(self, level: int) -> str:
        return paths.join(self.path, f"level_{level}")

    def centroids_path(self, level: int) -> str:
        return paths.join(self.level_dir(level), "centroids")

    def assignments_path(self, level: int) -> str:
        return paths.join(self.level_dir(level), "assignments")

    def table_path(self, name: str) -> str:
        return paths.join(self.path, name)

    # ------------------------------------------------------------------ metadata
    def load(self) -> dict[str, Any] | None:
        text = paths.read_text(self.spark, paths.join(self.path, METADATA))
        if text is None:
            return None
        self.meta = json.loads(text)
        self.format = self.meta.get("output_format", self.format)
        return self.meta

    def save(self) -> None:
        self.meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        paths.write_text_atomic(self.spark, paths.join(self.path, METADATA), json.dumps(self.meta, indent=2, default=float))

    def open_for(self, config: "Config", overwrite: bool, input_identity: dict[str, Any] | None = None) -> None:
        """Start or resume a run of ``config`` here; refuse a different config, or an input
        that changed since the run started (``input_identity``: rows, dimension, Delta
        version), unless overwriting."""
        fingerprint = config.clustering_fingerprint()
        existing = self.load()
        refusal = self._refusal(existing, fingerprint, input_identity or {})
        if refusal:
            if not overwrite:
                raise ConfigError(refusal)
            log.warning("--overwrite: deleting %s (%s)", self.path, refusal)
            paths.delete(self.spark, self.path)
            existing = None
        if existing is None:
            self.meta = {
                "fingerprint": fingerprint,
                "config": config.to_dict(),
                "output_format": self.format,
                "levels": {},
                "samples": {},
            }
        else:
            self.meta["config"] = config.to_dict()
        if input_identity:
            self.meta["input"] = {**self.meta.get("input", {}), **input_identity}
        self.save()

    def _refusal(self, existing: dict[str, Any] | None, fingerprint: str, input_identity: dict[str, Any]) -> str:
        """Why this folder cannot take (or resume) the run, or "" if it can."""
        if existing is None:
            if paths.exists(self.spark, self.path) and paths.has_data_files(self.spark, self.path):
                return (f"output.path: {self.path} exists and is not a curation-spark run folder; "
                        "choose an empty or new folder (or pass --overwrite to replace it)")
            return ""
        if existing.get("fingerprint") != fingerprint:
            return (f"output.path: {self.path} holds a run with a different config "
                    f"(fingerprint {existing.get('fingerprint')} != {fingerprint}); "
                    "choose another output.path or pass --overwrite to replace it")
        changed = input_changes(existing.get("input", {}), input_identity)
        if changed:
            return (f"input.path: the input changed since the run in {self.path} started ({changed}); "
                    "its levels would not match the input any more: pass --overwrite to start again, "
                    "or choose another output.path")
        return ""

    def level_done(self, level: int) -> bool:
        return self.meta.get("levels", {}).get(str(level), {}).get("status") == "complete"

    def level_info(self, level: int) -> dict[str, Any]:
        return self.meta.get("levels", {}).get(str(level), {})

    def n_levels_done(self) -> int:
        n = 0
        while self.level_done(n + 1):
            n += 1
        return n

    def mark_level(self, level: int, info: dict[str, Any]) -> None:
        self.meta.setdefault("levels", {})[str(level)] = {**info, "status": "complete"}
        self.save()

    def mark_sample(self, name: str, info: dict[str, Any]) -> None:
        self.meta.setdefault("samples", {})[name] = info
        self.save()


def input_changes(recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between the input a run recorded and the input now ("" if nothing);
    keys missing on either side (older run folders, Parquet inputs) are not compared."""
    diffs = [f"{key} {recorded[key]} -> {current[key]}" for key in sorted(current)
             if recorded.get(key) is not None and current[key] is not None and recorded[key] != current[key]]
    return ", ".join(diffs)


def open_existing(spark: "SparkSession", path: str) -> RunFolder:
    """A finished (or partly finished) run folder, for ``sample`` and ``report``."""
    folder = RunFolder(spark, path, "delta")
    if folder.load() is None:
        raise ConfigError(f"--run: {path} is not a curation-spark run folder (no {METADATA})")
    return folder
