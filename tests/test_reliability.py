"""Faults: a failing task is retried by Spark and the result is identical to a clean run."""
from __future__ import annotations

import os
import subprocess
import sys

from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.tables import read_table

SETTINGS = ["clustering.n_levels=1", "clustering.n_clusters=[20]", "clustering.n_iters=8", "clustering.seed=11"]


def _centroids(spark, run):
    return sorted((r["cluster_id"], tuple(r["centroid"]), r["size"])
                  for r in read_table(spark, f"{run}/level_1/centroids").collect())


def test_task_failure_is_retried_with_identical_result(spark, tmp_dir):
    data = f"{tmp_dir}/mix"
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(4000, 8, 10, seed=2), data, "delta")
    clean = f"{tmp_dir}/clean"
    pipeline.cluster(load_config([], [f"input.path={data}", f"output.path={clean}", *SETTINGS]), spark)

    faulty = f"{tmp_dir}/faulty"
    args = [sys.executable, "-m", "curation_spark", "cluster", "--set", f"input.path={data}",
            "--set", f"output.path={faulty}", "--set", "spark.master=local[2,4]",  # 4 task attempts allowed
            "--set", "spark.conf.spark.ui.enabled=false"]
    for s in SETTINGS:
        args += ["--set", s]
    env = {**os.environ, "CURATION_SPARK_FAIL_FIRST_ATTEMPT": "kmeans", "CURATION_SPARK_PROGRESS": "off"}
    proc = subprocess.run(args, cwd=tmp_dir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "injected failure" in proc.stderr  # the first attempt really failed
    assert _centroids(spark, faulty) == _centroids(spark, clean)
