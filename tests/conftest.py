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
    from curation_spark.session import get_spark

    settings = SparkSettings(
        master="local[2]",
        app_name="curation-spark-tests",
        conf={
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
        },
    )
    session = get_spark(settings)
    yield session


@pytest.fixture
def tmp_dir(tmp_path):
    """A fresh folder per test, as a plain string path."""
    return str(tmp_path)
