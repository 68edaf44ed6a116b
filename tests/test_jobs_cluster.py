"""The spark-submit jobs (jobs/*.py) on a real Spark standalone cluster on 127.0.0.1.

A master and two workers (1 core, 2 GB each) are started with pyspark's ``spark-class``;
``jobs/curate.py`` is a separate driver process started with ``spark-submit``, with Delta
from ``--packages``. With one core per executor, each k-means barrier stage's two tasks
must run in the two executor JVMs and exchange partial sums over TCP
(curation_spark.engine.exchange) -- which local mode never exercises.

The submission ships what a real cluster needs, as the README ("spark-submit on a cluster") describes:

* the package as the wheel with ``--py-files`` (under a ``.zip`` name: PySpark puts only
  .zip/.egg/.jar py-files on the executors' Python path);
* the Python environment with ``--archives env.tar.gz#env`` and
  ``spark.pyspark.python=./env/bin/python``. Here the archive holds a stand-in
  ``bin/python`` that runs this venv's interpreter with ``-S`` and the venv's site-packages
  on PYTHONPATH: numpy/pyarrow/faiss are importable, the editable install of
  curation_spark (a .pth hook) is not -- executors can only use the shipped wheel.

The curated tables are read back with delta-rs (the ``deltalake`` package), not Spark.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import sysconfig
import tarfile
from pathlib import Path

import numpy as np
import pytest

import cluster_utils as cu

JOBS = cu.REPO / "jobs"
RING_SIZES = (2000, 20, 100, 50, 800)  # 2,970 points
TARGET = 200
SMALL_SETTINGS = [
    "clustering.n_levels=2", "clustering.n_clusters=[40,8]", "clustering.n_iters=10",
    "clustering.n_resampling_steps=[2,1]", "clustering.sample_size=[5,2]", "clustering.sampling_strategy=c",
    "clustering.seed=0", "clustering.num_partitions=2", f"sampling.target_size={TARGET}", "sampling.multiplier=1",
    "clustering.in_process_max_mb=0",  # tiny levels: force the barrier stages these tests are about
]
N_BARRIER_STAGES = 5  # k-means of level 1 (+2 resampling runs) and level 2 (+1)
BARRIER_STAGE = re.compile(r"Successfully scheduled all the (\d+) tasks for barrier stage (\d+)\.")
TASK_START = re.compile(r"Starting task \d+\.\d+ in stage (\d+)\.\d+ \(TID \d+\) \([^,()]+,\s*executor ([^,\s)]+)")


def barrier_executors(driver_log: str) -> dict[int, set[str]]:
    """Barrier stage id -> executors its tasks started on (from the driver's scheduler log)."""
    stages = {int(m.group(2)) for m in BARRIER_STAGE.finditer(driver_log)}
    placed: dict[int, set[str]] = {s: set() for s in stages}
    for m in TASK_START.finditer(driver_log):
        if int(m.group(1)) in placed:
            placed[int(m.group(1))].add(m.group(2))
    return placed


def job_args(*pairs: str) -> list[str]:
    return [x for kv in pairs for x in ("--set", kv)]


def check_curated(path: Path, input_ids: np.ndarray, target: int) -> np.ndarray:
    table = cu.read_delta(path)
    assert table.num_rows == target
    ids = table.column("id").to_numpy()
    assert len(np.unique(ids)) == len(ids), "multiplier 1: every point at most once"
    assert np.isin(ids, input_ids).all(), "curated ids must come from the input"
    return ids


def python_env_archive(folder: Path) -> Path:
    """``env.tar.gz`` with a ``bin/python`` that sees the venv's packages but not curation_spark."""
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    shim.chmod(0o755)
    archive = folder / "env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(shim, arcname="bin/python")
    return archive


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rings(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster_data")
    table = cu.write_rings(base / "rings", RING_SIZES, fmt="delta")
    return base, table.column("id").to_numpy()


@pytest.fixture(scope="module")
def curate_run(standalone, rings):
    """jobs/curate.py submitted to the standalone master, with the wheel and the env shipped."""
    base, _ = rings
    ship = base / "ship"
    ship.mkdir()
    wheel = cu.build_wheel(ship / "build")
    shipped = ship / (wheel.stem + ".zip")
    shutil.copyfile(wheel, shipped)
    archive = python_env_archive(ship)
    out = base / "run"
    result = standalone.submit(
        [JOBS / "curate.py", *job_args(f"input.path={base / 'rings'}", f"output.path={out}", *SMALL_SETTINGS)],
        cwd=ship, py_files=[shipped], archives=[f"{archive}#env"],
        conf={"spark.pyspark.python": "./env/bin/python",
              "spark.executorEnv.PYTHONPATH": sysconfig.get_paths()["purelib"]})
    assert result.returncode == 0, standalone.submit_failed(result)
    return {"out": out, "result": result, "shipped": shipped, "app_id": _app_id(standalone, result)}


def _app_id(cluster: cu.StandaloneCluster, result) -> str:
    """The application id of a finished submission (the master's latest completed app)."""
    state = cluster.state()
    done = sorted(state.get("completedapps", []), key=lambda a: a.get("starttime", 0))
    assert done, "the master recorded no completed application"
    return done[-1]["id"]


# ---------------------------------------------------------------------- tests


@pytest.mark.cluster
def test_curate_job_on_standalone_cluster(standalone, rings, curate_run):
    _, input_ids = rings
    out, result = curate_run["out"], curate_run["result"]
    # (spark-submit merges the Python driver's stderr into its stdout)
    assert f"master {standalone.master_url}" in result.stdout  # spark-submit's master, not local[*]
    assert f"curated table: {out / 'curated'} ({TARGET} rows)" in result.stdout
    check_curated(out / "curated", input_ids, TARGET)

    meta = json.loads((out / "run.json").read_text())
    assert [meta["levels"][str(lv)]["status"] for lv in (1, 2)] == ["complete", "complete"]
    assert meta["levels"]["1"]["engine"] == "barrier"
    assert meta["levels"]["1"]["n_clusters"] == 40
    assert meta["samples"]["curated"]["rows"] == TARGET
    # Every k-means ran as a 2-task barrier stage with its tasks in the two executor JVMs (one
    # core each), exchanging partial sums over TCP.
    placed = barrier_executors(result.stderr)
    assert len(placed) >= N_BARRIER_STAGES, result.stderr[-5000:]
    assert all(len(executors) == 2 for executors in placed.values()), placed
    for i in range(2):
        assert list((standalone.workdir / f"worker-{i}" / curate_run["app_id"]).iterdir()), f"no executor on worker {i}"


@pytest.mark.cluster
def test_curate_job_used_the_shipped_wheel_and_env(standalone, curate_run):
    shipped = curate_run["shipped"]
    # The driver imported the package from the shipped wheel, not the editable source tree ...
    banner = next(line for line in curate_run["result"].stdout.splitlines() if line.startswith("curation_spark "))
    assert f"{shipped.name}/curation_spark/__init__.py" in banner, banner
    # ... and each executor fetched the wheel and unpacked the env archive into its work dir;
    # their Python (-S) had no other way to import curation_spark.
    for i in range(2):
        app_dir = standalone.workdir / f"worker-{i}" / curate_run["app_id"]
        assert list(app_dir.glob(f"*/{shipped.name}")), f"wheel not fetched by the executor on worker {i}"
        assert list(app_dir.glob("*/env/bin/python")), f"env archive not unpacked on worker {i}"


@pytest.mark.cluster
def test_cluster_run_equals_local_run(spark, rings, curate_run, tmp_path):
    """Same input, config, seed and number of k-means partitions: the standalone cluster (two
    executor JVMs, partial sums over TCP) and local mode write identical tables."""
    from curation_spark import pipeline
    from curation_spark.config import load_config

    base, _ = rings
    local = tmp_path / "local_run"
    pipeline.run(load_config([], [f"input.path={base / 'rings'}", f"output.path={local}", *SMALL_SETTINGS]), spark)
    compared = cu.assert_same_run(curate_run["out"], local)
    assert compared == ["curated", "level_1/assignments", "level_1/centroids", "level_2/assignments",
                        "level_2/centroids"]


@pytest.mark.cluster
def test_sample_job_over_the_cluster_run(spark, rings, curate_run):
    """jobs/sample.py over the run folder the cluster wrote (in-process, on the local test session)."""
    _, input_ids = rings
    sample = _load_job("sample")
    out = curate_run["out"]
    code = sample.main(["--run", str(out), "--target-size", "150", "--strategy", "c", "--table", "curated_c"])
    assert code == 0
    # without spark.log.level the job lowered Spark's own log to WARN (not its query-plan INFO lines)
    root = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager.getRootLogger()
    assert str(root.getLevel()) == "WARN"
    check_curated(out / "curated_c", input_ids, 150)
    assert json.loads((out / "run.json").read_text())["samples"]["curated_c"]["rows"] == 150


# ---------------------------------------------------------------------- job arguments (no cluster)


def _load_job(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_arguments_map_to_the_cli():
    curate, cluster, sample, dedup = (_load_job(n) for n in ("curate", "cluster", "sample", "dedup"))
    assert dedup.cli_args(["--config", "a.yaml", "--set", "dedup.threshold=0.9"]) == [
        "dedup", "a.yaml", "--set", "dedup.threshold=0.9"]
    assert curate.cli_args(["--config", "a.yaml", "--config", "b.yaml", "--set", "x.y=1", "--overwrite"]) == [
        "run", "a.yaml", "b.yaml", "--set", "x.y=1", "--overwrite"]
    assert cluster.cli_args(["--set", "input.path=p", "--set", "output.path=o", "--debug"]) == [
        "--debug", "cluster", "--set", "input.path=p", "--set", "output.path=o"]
    assert sample.cli_args(["--run", "r", "--target-size", "10", "--table", "t"]) == [
        "sample", "--run", "r", "--target-size", "10", "--multiplier", "1", "--strategy", "r", "--seed", "0",
        "--keep-columns", "", "--table", "t"]
    with pytest.raises(SystemExit):
        sample.cli_args(["--run", "r"])  # --target-size is required


def test_job_reports_config_error_in_one_line(capsys):
    """A bad config fails in one line with exit 2, before any Spark session is started."""
    for name in ("curate", "cluster", "dedup"):
        job = _load_job(name)
        code = job.main(["--set", "clustering.n_iters=zero", "--set", "input.path=/nonexistent"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert len(err) == 1 and err[0].startswith("error: clustering.n_iters"), err
