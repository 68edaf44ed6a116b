"""One shared local SparkSession (with Delta) for the whole test run.

Like dbldatagen's fixture: reuse an active session if there is one, else local[2] with
few shuffle partitions and the UI off; never stopped between tests.
"""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("CURATION_SPARK_PROGRESS", "off")


@pytest.fixture(scope="session")
def spark():
    from curation_spark.config import SparkSettings
    from curation_spark.io.session import get_spark

    settings = SparkSettings(
        master="local[2]",
        app_name="curation-spark-tests",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
            # Tiny Delta tables: replaying a log of a few commits need not fan out to
            # Delta's default 50 partitions (seconds per table read otherwise).
            "spark.databricks.delta.snapshotPartitions": "2",
        },
    )
    session = get_spark(settings)
    yield session


@pytest.fixture(scope="session")
def standalone(tmp_path_factory):
    """A Spark standalone master and two 1-core workers on 127.0.0.1, shared by the cluster
    tests and always stopped (tests/cluster_utils.py)."""
    import cluster_utils as cu

    cluster = cu.StandaloneCluster(tmp_path_factory.mktemp("standalone"), n_workers=2, cores=1, memory="2g")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def connect_server(tmp_path_factory):
    """pyspark's own Spark Connect server on 127.0.0.1 (``local[2]``, Delta), started once for
    the tests that need one (tests/test_connect.py, the Estimator's Connect test) and always
    stopped (tests/cluster_utils.py)."""
    import cluster_utils as cu

    with cu.ConnectServer(tmp_path_factory.mktemp("connect_server")) as srv:
        yield srv


@pytest.fixture
def tmp_dir(tmp_path):
    """A fresh folder per test, as a plain string path."""
    return str(tmp_path)


# ----------------------------------------------------------------------------- shared runs
# The paper's toy setting is run once per test session and shared by the hierarchy,
# sampling and report tests (it is the expensive part of the suite).

TOY_OVERRIDES = [
    "clustering.n_levels=2", "clustering.n_clusters=[1000,300]", "clustering.n_iters=50",
    "clustering.n_resampling_steps=[10,10]", "clustering.sample_size=[15,2]", "clustering.sampling_strategy=r",
    "clustering.seed=0", "sampling.target_size=1000", "sampling.strategy=r", "sampling.keep_columns=[label]",
]


@pytest.fixture(scope="session")
def rings_path(spark, tmp_path_factory):
    """The five toy rings (29,700 points) as a Delta table."""
    from curation_spark import pipeline, synth

    path = str(tmp_path_factory.mktemp("rings") / "rings")
    pipeline.write_synthetic(spark, synth.make_rings(seed=0), path, "delta")
    return path


@pytest.fixture(scope="session")
def toy_run(spark, rings_path, tmp_path_factory):
    """2 levels [1000, 300], sample_size [15, 2], 10 resampling steps, target 1000."""
    from curation_spark import pipeline
    from curation_spark.config import load_config

    out = str(tmp_path_factory.mktemp("toy") / "run")
    config = load_config([], [f"input.path={rings_path}", f"output.path={out}", *TOY_OVERRIDES])
    return config, pipeline.run(config, spark)


@pytest.fixture(scope="session")
def flat_run(spark, rings_path, tmp_path_factory):
    """Plain one-level k-means (K=1000, no resampling) with equal per-cluster sampling."""
    from curation_spark import pipeline
    from curation_spark.config import load_config

    out = str(tmp_path_factory.mktemp("flat") / "run")
    config = load_config([], [f"input.path={rings_path}", f"output.path={out}", "clustering.n_levels=1",
                              "clustering.n_clusters=[1000]", "clustering.n_iters=50", "clustering.seed=0",
                              "clustering.n_resampling_steps=0",
                              "sampling.target_size=1000", "sampling.keep_columns=[label]"])
    return config, pipeline.run(config, spark)
