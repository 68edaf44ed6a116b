"""Executor loss on a real standalone cluster: kill -9 an executor JVM in the middle of a
k-means iteration; the job completes and writes exactly what a clean run writes.

The cluster (master + two 1-core workers on 127.0.0.1) is the shared ``standalone``
fixture. ``jobs/curate.py`` runs under spark-submit with ``CURATION_SPARK_ITERATION_LOG``
set, so the k-means task that reduces the partial sums appends one line per iteration
(iteration, its task attempt id, its pid) to a file the test follows. At iteration 3 of level
1's k-means, the test finds the executor JVM that runs that Python task (its ancestor
``CoarseGrainedExecutorBackend``) and SIGKILLs it. Spark then fails the barrier stage,
the master starts a new executor on the same worker, and the whole stage runs again (a
second task attempt id in the log, counting from iteration 1). The clean run to compare with is a local-mode run of
the same config and partitioning (``tests/test_jobs_cluster.py`` proves local == cluster).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import cluster_utils as cu

N_POINTS, DIM, COMPONENTS = 100_000, 32, 200
N_ITERS = 60
KILL_AT_ITERATION = 3
# One level keeps the test short; local == cluster for two levels with resampling on the
# Spark engine is tests/test_jobs_cluster.py's.
SETTINGS = [
    "clustering.n_levels=1", "clustering.n_clusters=[300]", f"clustering.n_iters={N_ITERS}",
    "clustering.n_resampling_steps=0",
    "clustering.num_partitions=2", "clustering.seed=3", "sampling.target_size=5000", "sampling.strategy=r",
    "clustering.in_process_max_mb=0",  # 12.8 MB of embeddings: force the Spark engine this test kills
]


def read_iteration_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return entries


def executor_jvm_of(pid: int):
    """The executor JVM (CoarseGrainedExecutorBackend) a Python worker runs under."""
    import psutil

    proc = psutil.Process(pid)
    for parent in proc.parents():
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in parent.cmdline():
            return parent
    raise AssertionError(f"python worker {pid} has no executor JVM among its parents")


class ExecutorKiller(threading.Thread):
    """Follows the iteration log; at ``KILL_AT_ITERATION`` of level 1's first attempt,
    SIGKILLs the executor JVM running the reducing task. Records what it did."""

    def __init__(self, log_path: Path, timeout: float = 400.0) -> None:
        super().__init__(daemon=True)
        self.log_path = log_path
        self.timeout = timeout
        self.killed: dict | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for entry in read_iteration_log(self.log_path):
                if entry["stage"] == "level 1" and entry["iteration"] >= KILL_AT_ITERATION:
                    try:
                        jvm = executor_jvm_of(entry["pid"])
                        cmdline = jvm.cmdline()
                        executor_id = cmdline[cmdline.index("--executor-id") + 1]
                        os.kill(jvm.pid, signal.SIGKILL)
                        self.killed = {"jvm_pid": jvm.pid, "executor_id": executor_id,
                                       "at_iteration": entry["iteration"]}
                    except Exception as exc:  # reported by the test, not lost in the thread
                        self.error = repr(exc)
                    return
            time.sleep(0.05)
        self.error = f"level 1 never reached iteration {KILL_AT_ITERATION} in {self.timeout:.0f} s"


@pytest.fixture(scope="module")
def mixture(spark, tmp_path_factory):
    from curation_spark import pipeline

    base = tmp_path_factory.mktemp("faults")
    pipeline.write_mixture(spark, str(base / "mixture"), N_POINTS, DIM, COMPONENTS, seed=1, n_files=4)
    return base


@pytest.mark.cluster
def test_executor_killed_mid_iteration_result_equals_clean_run(spark, standalone, mixture):
    from curation_spark import pipeline
    from curation_spark.config import load_config

    data = mixture / "mixture"
    clean = mixture / "clean"
    pipeline.run(load_config([], [f"input.path={data}", f"output.path={clean}", *SETTINGS]), spark)

    log_path = mixture / "iterations.jsonl"
    faulty = mixture / "faulty"
    killer = ExecutorKiller(log_path)
    killer.start()
    result = standalone.submit(
        [cu.REPO / "jobs" / "curate.py", *[x for s in (f"input.path={data}", f"output.path={faulty}", *SETTINGS)
                                           for x in ("--set", s)]],
        cwd=mixture, env={"CURATION_SPARK_ITERATION_LOG": str(log_path)})
    killer.join(timeout=30)
    assert killer.error is None, killer.error
    assert killer.killed is not None
    assert result.returncode == 0, standalone.submit_failed(result)

    entries = [e for e in read_iteration_log(log_path) if e["stage"] == "level 1"]
    attempts: dict[int, list[int]] = {}  # task attempt id of the reducing task -> its iterations
    for e in entries:
        attempts.setdefault(e["task_attempt_id"], []).append(e["iteration"])
    assert len(attempts) == 2, attempts
    first, retried = attempts.values()  # in the order they wrote
    # The kill landed mid-fit: the first attempt stopped short, a new attempt ran from the start.
    assert KILL_AT_ITERATION <= max(first) < N_ITERS, first
    assert retried == list(range(1, len(retried) + 1)) and len(retried) > max(first), retried
    # Spark saw the executor go (the driver logs its loss).
    assert f"Lost executor {killer.killed['executor_id']}" in result.stderr or \
        f"executor {killer.killed['executor_id']} " in result.stderr, result.stderr[-4000:]

    compared = cu.assert_same_run(faulty, clean)
    assert compared == ["curated", "level_1/assignments", "level_1/centroids"]
