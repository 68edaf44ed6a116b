"""What a session offers: classic (a JVM driver in this process, ``sparkContext``) or
Spark Connect (a client of a remote server: Databricks serverless and standard access
mode, ``SPARK_REMOTE=sc://...``; no ``sparkContext``, RDDs or py4j).

Everything that differs between the two goes through here, decided per call from the
session's own type, so the rest of the code runs on both: naming the work (job
descriptions on classic, job tags on Connect), shipping driver arrays to tasks (broadcast
variables on classic, inside the task's closure on Connect) and the task slots the
barrier engine may use.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from curation_spark.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Largest driver array shipped inside a task's closure over Spark Connect (the closure
#: travels in the plan, through gRPC; the server's default message limit is 128 MB).
CONNECT_CLOSURE_MAX_BYTES = 64 * 1024 * 1024


def is_connect(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect session (no SparkContext in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


#: Host names of a Spark Connect server on this machine (its relative paths are ours).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def connect_host(spark: SparkSession) -> str | None:
    """The host of a Spark Connect session's server (None: classic, or the client does not say)."""
    if not is_connect(spark):
        return None
    try:
        return str(spark.client._builder.host)  # type: ignore[operator]  # a Connect session (typed as classic)
    except AttributeError:  # another client implementation (Databricks Connect): unknown
        return None


def server_is_local(spark: SparkSession) -> bool:
    """Whether a Spark Connect server runs on this machine (loopback), so that a local
    path means the same folder to the client and to the server."""
    host = connect_host(spark)
    return host is not None and (host in LOOPBACK_HOSTS or host.startswith("127."))


def master(spark: SparkSession) -> str:
    """The session's master URL (``local[2]``, ``spark://...``; ``""`` where the server does not say)."""
    if not is_connect(spark):
        return spark.sparkContext.master  # type: ignore[return-value]  # a running context has one
    return _server_conf(spark, "spark.master") or ""


def describe_work(spark: SparkSession, text: str | None) -> None:
    """Name the Spark jobs that follow in the UI (``None``: stop naming them).

    Classic: the job description. Connect: one job tag (tags may not hold commas)."""
    if not is_connect(spark):
        spark.sparkContext.setJobDescription(text)  # type: ignore[arg-type]  # None clears it
        return
    spark.clearTags()
    tag = re.sub(r"[,\s]+", " ", text or "").strip()
    if tag:
        spark.addTag(tag[:200])


class _Captured:
    """A value that travels inside the task's closure: the broadcast variable's interface."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def unpersist(self) -> None:
        pass


def ship(spark: SparkSession, value: Any, what: str) -> Any:
    """``value`` (numpy arrays, tuples of them) for tasks to read as ``.value``.

    Classic: a broadcast variable (sent once per executor). Connect has none: the value is
    pickled with the task's function, which is refused above
    :data:`CONNECT_CLOSURE_MAX_BYTES` with one line naming ``what`` (e.g. the centroids of
    a K that only dedicated compute can take)."""
    if not is_connect(spark):
        return spark.sparkContext.broadcast(value)
    size = _nbytes(value)
    if size > CONNECT_CLOSURE_MAX_BYTES:
        raise ConfigError(f"{what}: {size / 2**20:.0f} MiB to ship to every task, more than Spark Connect takes "
                          f"inside a task ({CONNECT_CLOSURE_MAX_BYTES / 2**20:.0f} MiB); use fewer clusters per "
                          "level or a classic session (dedicated compute, spark-submit)")
    return _Captured(value)


def _nbytes(value: Any) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def task_slots(spark: SparkSession) -> int | None:
    """Tasks that can run at once (what a barrier stage may ask for), or None when the
    session does not say.

    Classic: ``defaultParallelism`` (cores of ``local[*]``, or every executor's). Connect
    reads the server's settings: ``spark.default.parallelism``, else ``local[N]`` /
    ``local[*]`` from ``spark.master`` (``*``: the server machine's cores, asked of one
    task once per session), else ``spark.executor.instances`` x ``spark.executor.cores``."""
    if not is_connect(spark):
        return max(1, int(spark.sparkContext.defaultParallelism))
    parallelism = _server_conf(spark, "spark.default.parallelism")
    if parallelism:
        return max(1, int(parallelism))
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", _server_conf(spark, "spark.master") or "")
    if local:
        cores = local.group(1) or "1"
        if cores != "*":
            return int(cores)
        key = getattr(spark, "session_id", None) or id(spark)
        if key not in _SERVER_CORES:
            _SERVER_CORES[key] = server_cores(spark)
        return _SERVER_CORES[key]
    instances, cores = _server_conf(spark, "spark.executor.instances"), _server_conf(spark, "spark.executor.cores")
    if instances and cores:
        return max(1, int(instances) * int(cores))
    return None


#: ``server_cores`` per Connect session (one small job the first time).
_SERVER_CORES: dict[object, int] = {}


def _server_conf(spark: SparkSession, key: str) -> str | None:
    """A server setting, or None where it is unset or hidden from clients (Databricks
    serverless refuses to show some)."""
    try:
        return spark.conf.get(key, None) or None
    except Exception:  # e.g. CONFIG_NOT_AVAILABLE
        return None


def server_cores(spark: SparkSession) -> int:
    """``os.cpu_count()`` where one task runs (for ``local[*]``: the server's machine)."""
    import pandas as pd

    def count(frames):
        import os

        for _ in frames:
            pass
        yield pd.DataFrame({"cores": [os.cpu_count() or 1]})

    return int(spark.range(1, numPartitions=1).mapInPandas(count, "cores long").first()["cores"])  # type: ignore[index]  # one row
