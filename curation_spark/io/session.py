"""The SparkSession to use: the active one where there is one, else a local Delta session.

On Databricks, under ``spark-submit`` or in a notebook a session already exists and we
never touch its settings. Run as a plain Python program we start ``local[*]`` with Delta
Lake enabled (its jars are resolved from Maven Central once, quietly, into a local cache
and put on the classpath with ``spark.jars``: :mod:`curation_spark.io.delta_jars`) and Arrow
on. When Delta cannot be had, the session still starts and Parquet keeps working; anything
that needs Delta raises one clear error.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from curation_spark.errors import CurationError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from curation_spark.config import SparkSettings

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
DELTA_HINT = (
    "Delta Lake is not available in this Spark session: install the matching delta-spark "
    "(pip install 'delta-spark>=4.0,<4.1') and start Spark with "
    "--packages io.delta:delta-spark_2.13:<version> and "
    f"--conf spark.sql.extensions={DELTA_EXTENSION} "
    f"--conf spark.sql.catalog.spark_catalog={DELTA_CATALOG}, "
    "or use output.format=parquet"
)

#: Settings for a session we start ourselves; user ``spark.conf`` entries win.
LOCAL_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "16",
    "spark.driver.memory": "4g",
    "spark.sql.adaptive.enabled": "true",
    # Python workers keep the decoded embedding blocks; reuse keeps their imports warm.
    "spark.python.worker.reuse": "true",
    "spark.ui.showConsoleProgress": "false",
    # Replaying a Delta log fans out to 50 partitions by default (sized for clusters): on a
    # few local cores that is ~1 s per table read of the run folder's small tables (an
    # update reads a dozen); measured at 1M rows: update 60 s -> 40 s with 4; a fresh
    # process reading a 20k-row run's tables: 0.3-0.9 s less per table with 1 than with 8.
    "spark.databricks.delta.snapshotPartitions": "1",
}


class DeltaUnavailableError(CurationError):
    """Raised when a Delta table is read or written in a session without Delta."""

    def __init__(self, what: str = "") -> None:
        super().__init__(f"{what + ': ' if what else ''}{DELTA_HINT}")


def get_spark(settings: SparkSettings | None = None, with_delta: bool = True) -> SparkSession:
    """Return the session to use.

    Parameters
    ----------
    settings
        Master, app name and extra conf for a session we start; ignored when a session is
        already active (Databricks, spark-submit, notebooks), whose settings are left alone.
    with_delta
        Start a local session with Delta Lake. If the jars cannot be resolved we fall back
        to a Parquet-only session with a warning.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    remote = connect_url(settings)
    if remote:
        return _build_remote(remote, settings)
    if _launched_by_spark_submit():
        # Under spark-submit (and on Databricks) the master, name and packages come from the
        # launcher: build the session from them, adding nothing.
        return SparkSession.builder.getOrCreate()

    from curation_spark.config import DEFAULTS, SparkSettings

    if settings is None:
        spark_defaults = DEFAULTS["spark"]
        settings = SparkSettings(spark_defaults["master"], spark_defaults["app_name"], {})

    # Executors must run the same interpreter (and so see numpy/faiss) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    if with_delta:
        try:
            return _build_local(settings, delta=True)
        except CurationError:
            raise
        except Exception as exc:  # Ivy could not resolve the jars, delta-spark missing, ...
            log.warning("could not start Spark with Delta Lake (%s); continuing with Parquet only. %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, DELTA_HINT)
    return _build_local(settings, delta=False)


def connect_url(settings: SparkSettings | None) -> str | None:
    """The Spark Connect server to use, configured the PySpark way: ``SPARK_REMOTE``
    (``sc://host:port``), else ``spark.conf.spark.remote`` in the config; None: classic."""
    url = os.environ.get("SPARK_REMOTE") or (settings.conf.get("spark.remote") if settings is not None else None)
    return url or None


def _build_remote(url: str, settings: SparkSettings | None) -> SparkSession:
    """A Spark Connect session: the server owns master, packages and Delta; the config's
    ``spark.conf`` entries are set as session settings (a server that refuses one: one
    line naming it)."""
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(url).getOrCreate()
    for key, value in (settings.conf if settings is not None else {}).items():
        if key == "spark.remote":
            continue
        try:
            spark.conf.set(key, value)
        except PySparkException as exc:
            raise CurationError(f"spark.conf.{key}: the Spark Connect server {url} does not take this setting from "
                                f"a client ({str(exc).splitlines()[0][:160]}); set it on the server") from exc
    log.info("Spark Connect session on %s", url)
    return spark


def _launched_by_spark_submit() -> bool:
    """True in a driver started by spark-submit/pyspark shell (a JVM gateway already exists)."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context is not None or "PYSPARK_GATEWAY_PORT" in os.environ


def _build_local(settings: SparkSettings, delta: bool) -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    conf = dict(LOCAL_DEFAULTS)
    if delta:
        conf["spark.sql.extensions"] = DELTA_EXTENSION
        conf["spark.sql.catalog.spark_catalog"] = DELTA_CATALOG
    conf.update(settings.conf)
    if delta:
        conf.update(_delta_classpath(settings.conf))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _delta_classpath(user_conf: Mapping[str, str]) -> dict[str, str]:
    """The ``spark.jars`` entry that puts the cached Delta Lake jars on the classpath (no Ivy
    run, no network on a start), merged with the user's own ``spark.jars``. Nothing when the
    user brings Delta themselves (``io.delta:delta-spark`` in their ``spark.jars.packages``
    or a delta-spark jar in their ``spark.jars``): their setting wins. Other
    ``spark.jars.packages`` of theirs are left for Spark to resolve as usual."""
    from curation_spark.io.delta_jars import delta_jars

    packages = [p.strip() for p in str(user_conf.get("spark.jars.packages", "") or "").split(",")]
    if any(p.startswith("io.delta:delta-spark") for p in packages):
        return {}
    own_jars = [j.strip() for j in str(user_conf.get("spark.jars", "") or "").split(",") if j.strip()]
    if any(os.path.basename(j).startswith(("delta-spark_", "io.delta_delta-spark_")) for j in own_jars):
        return {}
    return {"spark.jars": ",".join([str(p) for p in delta_jars(user_conf)] + own_jars)}


def delta_available(spark: SparkSession) -> bool:
    """Whether this session can read and write Delta tables."""
    from curation_spark.io.spark_api import is_connect

    if os.environ.get("DATABRICKS_RUNTIME_VERSION") or is_connect(spark):
        return True  # (Spark Connect: Delta is the server's business; a server without it says so itself)
    jvm = spark.sparkContext._jvm
    from py4j.protocol import Py4JJavaError

    try:
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", False,  # type: ignore[union-attr]  # classic: JVM up
                                    jvm.Thread.currentThread().getContextClassLoader())  # type: ignore[union-attr]  # classic: JVM up
    except Py4JJavaError:  # ClassNotFoundException: the Delta jars are not on this session
        return False
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return DELTA_EXTENSION in extensions


def require_delta(spark: SparkSession, what: str = "") -> None:
    """Raise :class:`DeltaUnavailableError` unless the session has Delta."""
    if not delta_available(spark):
        raise DeltaUnavailableError(what)


def default_parallelism(spark: SparkSession) -> int:
    """Task slots the cluster offers now (cores of local[*], or all executor cores; a Spark
    Connect server that does not say: its shuffle partitions)."""
    from curation_spark.io.spark_api import task_slots

    slots = task_slots(spark)
    return slots if slots is not None else max(1, int(spark.conf.get("spark.sql.shuffle.partitions", "8") or 8))


def task_cpus(spark: SparkSession) -> int:
    """Cores each task may use (``spark.task.cpus``); sets faiss's thread count."""
    return max(1, int(spark.conf.get("spark.task.cpus", "1") or 1))
