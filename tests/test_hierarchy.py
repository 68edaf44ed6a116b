"""Hierarchical k-means: resampling effect on the toy rings, table consistency, splitting,
reference configs, and resume after a real kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.io import paths
from curation_spark.io.tables import delta_version, read_table

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def big_ring_share(spark, run_path: str) -> float:
    """Share of level-1 centroids lying on the big (20,000-point) ring: the ring whose
    circle (radius 0.85, the annulus' middle) the centroid is closest to."""
    cents = np.array([r["centroid"] for r in read_table(spark, f"{run_path}/level_1/centroids").collect()])
    centers = np.array(synth.RING_CENTERS)
    dist = np.linalg.norm(cents[:, None, :] - centers[None], axis=2)
    return float((np.abs(dist - 0.85).argmin(axis=1) == 0).mean())


def test_resampling_moves_centroids_from_density_toward_area(spark, toy_run, flat_run):
    with_resampling = big_ring_share(spark, toy_run[1].run_path)
    without = big_ring_share(spark, flat_run[1].run_path)
    print(f"\nshare of 1000 level-1 centroids on the big ring: plain k-means {without:.3f}, "
          f"with resampling {with_resampling:.3f} (area share 0.20; density share 0.67)")
    assert with_resampling <= 0.36
    assert with_resampling < without - 0.08


def test_level_tables_are_consistent(spark, toy_run):
    from pyspark.sql import functions as F

    config, summary = toy_run
    run = paths.display(summary.run_path)  # (qualified: file:/...; a local folder here)
    n = 29_700
    meta = json.loads(Path(run, "run.json").read_text())
    assert [meta["levels"][str(level)]["status"] for level in (1, 2)] == ["complete", "complete"]
    previous_ids = None
    for level in (1, 2):
        a = read_table(spark, f"{run}/level_{level}/assignments")
        c = read_table(spark, f"{run}/level_{level}/centroids")
        n_points = n if level == 1 else previous_ids
        assert a.count() == n_points
        assert a.select("point_id").distinct().count() == n_points  # exactly one cluster per point
        ids = {r["cluster_id"] for r in c.select("cluster_id").collect()}
        assert ids == set(range(len(ids)))
        assert {r["cluster_id"] for r in a.select("cluster_id").distinct().collect()} <= ids
        assert c.agg(F.sum("flat_size")).first()[0] == n
        assert c.agg(F.sum("size")).first()[0] == n_points
        assert c.where("size <= 0").count() == c.where("flat_size <= 0").count()
        previous_ids = len(ids)
    # Every level-1 cluster has a parent that exists at level 2; the top level has none.
    l1 = read_table(spark, f"{run}/level_1/centroids")
    l2_ids = {r["cluster_id"] for r in read_table(spark, f"{run}/level_2/centroids").collect()}
    parents = {r["parent_id"] for r in l1.select("parent_id").distinct().collect()}
    assert None not in parents and parents <= l2_ids
    assert read_table(spark, f"{run}/level_2/centroids").where("parent_id is not null").count() == 0
    stats = meta["levels"]["1"]
    assert {"min", "median", "max", "gini"} <= set(stats["sizes"]) and len(stats["resampling"]) == 10


@pytest.fixture(scope="module")
def small_mixture(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mix") / "mixture")
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(3000, 8, 12, seed=3), path, "delta")
    return path


def test_splitting_gives_dense_nonempty_subclusters(spark, small_mixture, tmp_dir):
    config = load_config([], [f"input.path={small_mixture}", f"output.path={tmp_dir}/run", "clustering.n_levels=1",
                              "clustering.n_clusters=[10]", "clustering.n_splits=[4]", "clustering.n_iters=10",
                              "clustering.n_resampling_steps=0"])
    summary = pipeline.cluster(config, spark)
    c = read_table(spark, f"{tmp_dir}/run/level_1/centroids").collect()
    a = read_table(spark, f"{tmp_dir}/run/level_1/assignments")
    ids = sorted(r["cluster_id"] for r in c)
    assert 10 < len(ids) <= 40 and ids == list(range(len(ids)))
    assert min(r["size"] for r in c) > 0 and sum(r["size"] for r in c) == 3000
    sizes = {r["cluster_id"]: r["count"] for r in a.groupBy("cluster_id").count().collect()}
    assert sizes == {r["cluster_id"]: r["size"] for r in c}
    assert summary.levels[0].split["n_clusters"] == len(ids)


def test_reference_two_level_config_runs_end_to_end(spark, small_mixture, tmp_dir):
    config = load_config([ROOT / "conf" / "reference_2levels.yaml"], [
        f"input.path={small_mixture}", f"output.path={tmp_dir}/ref", "output.format=parquet",
        "clustering.n_clusters=[40,8]", "clustering.n_iters=5", "clustering.n_resampling_steps=[2,2]",
        "clustering.sample_size=[5,2]", "sampling.target_size=300"])
    summary = pipeline.run(config, spark)
    assert [lvl.n_clusters for lvl in summary.levels] == [40, 8]
    assert summary.curated_rows == 300
    assert os.path.exists(f"{tmp_dir}/ref/level_2/centroids/_SUCCESS")


def test_different_config_on_existing_run_is_refused(spark, small_mixture, tmp_dir):
    from curation_spark.errors import ConfigError

    base = [f"input.path={small_mixture}", f"output.path={tmp_dir}/r", "clustering.n_clusters=[5]", "clustering.n_iters=3",
            "clustering.n_resampling_steps=0"]
    pipeline.cluster(load_config([], base), spark)
    with pytest.raises(ConfigError, match=r"different clustering config \(clustering.n_clusters: \[5\] -> \[6\]\)"):
        pipeline.cluster(load_config([], base + ["clustering.n_clusters=[6]"]), spark)
    summary = pipeline.cluster(load_config([], base + ["clustering.n_clusters=[6]"]), spark, overwrite=True)
    assert summary.levels[0].n_clusters == 6


def test_changed_input_on_existing_run_is_refused(spark, tmp_dir):
    """Resuming over an input that got a new Delta commit (or other rows) would mix two
    inputs in one hierarchy: refused unless --overwrite, which starts again."""
    from curation_spark.errors import ConfigError

    data = f"{tmp_dir}/growing"
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(600, 4, 3, seed=1), data, "delta")
    base = [f"input.path={data}", f"output.path={tmp_dir}/r", "clustering.n_clusters=[5]", "clustering.n_iters=3",
            "clustering.n_resampling_steps=0"]
    pipeline.cluster(load_config([], base), spark)
    assert json.loads(Path(tmp_dir, "r", "run.json").read_text())["input"] == {"n_rows": 600, "dim": 4,
                                                                               "delta_version": 0, "distance": "l2",
                                                                               "content_hash": None}
    pipeline.cluster(load_config([], base), spark)  # unchanged input: resumes (nothing to do)

    more = synth.make_gaussian_mixture(700, 4, 3, seed=1).slice(600)
    spark.createDataFrame(more).write.format("delta").mode("append").save(data)
    with pytest.raises(ConfigError, match=r"input.path: the input changed .*n_rows 600 -> 700"):
        pipeline.cluster(load_config([], base), spark)
    summary = pipeline.cluster(load_config([], base), spark, overwrite=True)
    assert summary.stats.n_rows == 700
    assert json.loads(Path(tmp_dir, "r", "run.json").read_text())["input"]["delta_version"] == 1


# On the Spark path (in_process_max_mb=0): the kill must land inside level 2's Spark jobs;
# in-process, the 60-point level 2 would be over long before.
RESUME_SETTINGS = ["clustering.n_levels=2", "clustering.n_clusters=[60,10]", "clustering.n_iters=10",
                   "clustering.n_resampling_steps=[0,2]", "clustering.sample_size=[1,3]", "clustering.seed=5",
                   "clustering.in_process_max_mb=0"]


def test_resume_after_kill_during_level_2(spark, small_mixture, tmp_dir):
    run = f"{tmp_dir}/killed"
    args = [sys.executable, "-m", "curation_spark", "cluster", "--set", f"input.path={small_mixture}",
            "--set", f"output.path={run}", "--set", "spark.master=local[2]", "--set", "spark.conf.spark.ui.enabled=false"]
    for s in RESUME_SETTINGS:
        args += ["--set", s]
    iteration_log = Path(tmp_dir, "killed_iterations.jsonl")
    env = {**os.environ, "CURATION_SPARK_PROGRESS": "off", "CURATION_SPARK_ITERATION_LOG": str(iteration_log)}
    proc = subprocess.Popen(args, cwd=tmp_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    meta_path = Path(run, "run.json")
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if meta_path.exists() and json.loads(meta_path.read_text())["levels"].get("1", {}).get("status") == "complete":
                break
            time.sleep(0.2)
        # Kill once level 2's k-means has logged an iteration (its barrier stage writes the
        # log): inside level 2 whatever the machine's speed, not after a guessed sleep.
        while time.time() < deadline and proc.poll() is None and not (
                iteration_log.exists() and '"stage": "level 2' in iteration_log.read_text()):
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # a real kill of the driver and its JVM
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = json.loads(meta_path.read_text())
    assert meta["levels"]["1"]["status"] == "complete" and "2" not in meta["levels"]
    v_assign = delta_version(spark, f"{run}/level_1/assignments")
    v_cent = delta_version(spark, f"{run}/level_1/centroids")

    overrides = [f"input.path={small_mixture}", *RESUME_SETTINGS]
    resumed = pipeline.cluster(load_config([], overrides + [f"output.path={run}"]), spark)
    assert delta_version(spark, f"{run}/level_1/assignments") == v_assign  # not rewritten
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, f"{run}/level_1/centroids").history().collect()
    later = [h["operation"] for h in history if h["version"] > v_cent]
    assert later == ["MERGE"]  # only level 2 filling parent_id, no rewrite of level 1
    assert resumed.levels[0].seconds == meta["levels"]["1"]["seconds"]  # level 1 was skipped

    fresh = f"{tmp_dir}/fresh"
    pipeline.cluster(load_config([], overrides + [f"output.path={fresh}"]), spark)
    for level in (1, 2):
        got = sorted((r["cluster_id"], tuple(r["centroid"]), r["parent_id"])
                     for r in read_table(spark, f"{run}/level_{level}/centroids").collect())
        want = sorted((r["cluster_id"], tuple(r["centroid"]), r["parent_id"])
                      for r in read_table(spark, f"{fresh}/level_{level}/centroids").collect())
        assert got == want
