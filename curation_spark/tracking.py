"""MLflow tracking of a run folder (``tracking.mlflow: true``, ``pip install 'curation-spark[mlflow]'``).

After ``run``, ``cluster``, ``sample`` or ``update`` the run folder's ``run.json`` is the
record of what happened; this module copies it into MLflow so a team that tracks its
work there sees curations beside its trainings: the resolved config as params, the
per-level, curated-table, dedup and update figures as metrics, ``run.json`` and the HTML
report as artifacts. It logs into the active MLflow run (a notebook's ``with
mlflow.start_run():``) or starts one and ends it. Spark settings are never logged as
params, and their secret-looking values are masked in the ``run.json`` artifact.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation_spark.config import Config, redact_spark_conf
from curation_spark.errors import ConfigError
from curation_spark.version import __version__

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from curation_spark.io.run_metadata import RunMetadata

log = logging.getLogger(__name__)

#: MLflow's limit on one param value (longer ones are cut, with a marker).
MAX_PARAM_CHARS = 6000


def check_available(config: Config) -> None:
    """One line before any work when tracking is asked for and MLflow is not installed."""
    if not config.tracking.mlflow:
        return
    try:
        import mlflow  # noqa: F401  (only whether it imports)
    except ImportError:
        raise ConfigError("tracking.mlflow: MLflow is not installed here; pip install 'curation-spark[mlflow]' "
                          "(or mlflow-skinny), or set tracking.mlflow=false") from None


def params_of(config: Config) -> dict[str, str]:
    """The resolved config as flat ``section.key`` params (values as JSON text); not the
    ``spark`` settings (credentials travel there) nor the ``tracking`` section itself."""
    out: dict[str, str] = {}
    for section, values in config.to_dict().items():
        if section in ("spark", "tracking"):
            continue
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            out[f"{section}.{key}"] = text if len(text) <= MAX_PARAM_CHARS else text[:MAX_PARAM_CHARS - 3] + "..."
    return out


def _metric_name(text: str) -> str:
    """MLflow's metric names take letters, digits, ``_ - . / `` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def metrics_of(meta: RunMetadata) -> dict[str, float]:
    """The figures of ``run.json`` a team compares across curations, by name."""
    out: dict[str, float] = {}
    if meta.input.n_rows is not None:
        out["input.rows"] = meta.input.n_rows
    if meta.input.dim is not None:
        out["input.dim"] = meta.input.dim
    for level, stats in sorted(meta.levels.items()):
        if not stats.complete:
            continue
        prefix = f"level_{level}"
        out[f"{prefix}.n_clusters"] = stats.n_clusters
        out[f"{prefix}.n_points"] = stats.n_points
        out[f"{prefix}.objective"] = stats.objective
        out[f"{prefix}.objective_kmeans"] = stats.objective_kmeans
        out[f"{prefix}.seconds"] = stats.seconds
        for key in ("min", "median", "max", "gini"):
            if key in stats.sizes:
                out[f"{prefix}.size_{key}"] = float(stats.sizes[key])
    for name, sample in meta.samples.items():
        prefix = _metric_name(f"sample.{name}")
        out[f"{prefix}.rows"] = sample.rows
        out[f"{prefix}.target_size"] = sample.target_size
        out[f"{prefix}.expected_rows"] = sample.expected_rows
        out[f"{prefix}.seconds"] = sample.seconds
    if meta.dedup is not None:
        out["dedup.points_in"] = meta.dedup.points_in
        out["dedup.removed"] = meta.dedup.removed
        out["dedup.seconds"] = meta.dedup.seconds
    if meta.updates:
        last = meta.updates[-1]
        out["update.count"] = len(meta.updates)
        out["update.rows_added"] = last.rows_added
        out["update.rows_deleted"] = last.rows_deleted
        out["update.n_points"] = last.n_points
        out["update.seconds"] = last.seconds
        if last.drift is not None:
            out["update.drift_share_beyond_p99"] = last.drift.share_beyond_p99
    return {k: float(v) for k, v in out.items() if v is not None and v == v}  # (NaN: not logged)


def redacted_metadata(meta: RunMetadata) -> dict[str, Any]:
    """``run.json`` as logged: secret-looking Spark settings masked."""
    data = meta.to_dict()
    spark = data.get("config", {}).get("spark", {})
    if isinstance(spark.get("conf"), Mapping):
        spark["conf"] = redact_spark_conf(spark["conf"])
    return data


def track(config: Config, run_path: str, spark: SparkSession, *, command: str) -> str | None:
    """Log the run folder ``run_path`` to MLflow when ``config.tracking.mlflow`` is set;
    returns the MLflow run id (None when tracking is off)."""
    if not config.tracking.mlflow:
        return None
    check_available(config)
    import mlflow

    from curation_spark.io.runfolder import open_existing

    folder = open_existing(spark, run_path)
    meta = folder.metadata
    assert meta is not None
    cfg = config.tracking
    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)
    active = mlflow.active_run()
    started = None
    if active is None:
        if cfg.experiment:
            mlflow.set_experiment(cfg.experiment)
        started = mlflow.start_run(run_name=cfg.run_name or Path(run_path.rstrip("/")).name)
        active = started
    elif cfg.experiment:
        log.info("tracking: logging into the active MLflow run %s (tracking.experiment %r not used)",
                 active.info.run_id, cfg.experiment)
    run_id = active.info.run_id
    try:
        _log_params(mlflow, run_id, {**params_of(meta.config), "distance": meta.distance,
                                     "curation_spark.version": __version__})
        mlflow.set_tags({"curation_spark.run_path": run_path, "curation_spark.command": command})
        step = len(meta.updates)  # a daily update adds a point to each curve
        mlflow.log_metrics(metrics_of(meta), step=step)
        with tempfile.TemporaryDirectory(prefix="curation-spark-mlflow-") as tmp:
            record = Path(tmp) / "run.json"
            record.write_text(json.dumps(redacted_metadata(meta), indent=2, default=float))
            mlflow.log_artifact(str(record))
            if cfg.log_report and meta.levels:
                from curation_spark.report import write_report

                report = write_report(run_path, out_dir=str(Path(tmp) / "report"), spark=spark)
                mlflow.log_artifacts(str(Path(report).parent), artifact_path="report")
    finally:
        if started is not None:
            mlflow.end_run()
    log.info("tracking: %s logged to MLflow run %s", command, run_id)
    return run_id


def _log_params(mlflow: Any, run_id: str, params: dict[str, str]) -> None:
    """MLflow params cannot change within a run: log the new ones, keep the logged ones
    (a re-sample in the same MLflow run changes ``sampling.*``; its metrics say what it did)."""
    logged = mlflow.get_run(run_id).data.params
    changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
    if changed:
        log.info("tracking: params already logged in MLflow run %s kept as they were: %s", run_id,
                 ", ".join(changed))
    new = {k: v for k, v in params.items() if k not in logged}
    if new:
        mlflow.log_params(new)
