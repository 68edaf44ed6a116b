"""Resampling inside the k-means barrier stage (curation_spark.engine.stage_resampling) gives the
tables of the Spark jobs it replaces (window sample, k-means on it, full reassignment)."""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark.curation import hierarchy
from curation_spark import pipeline, synth
from curation_spark.engine import stage_resampling
from curation_spark.config import load_config
from curation_spark.io.tables import read_table, to_points

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

N, DIM, K = 4000, 8, 24


@pytest.fixture(scope="module")
def points(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stage_resampling") / "mixture")
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(N, DIM, 16, seed=5), path, "delta")
    return to_points(read_table(spark, path), "id", "embedding")


def _level(points, settings):
    cfg = load_config([], ["clustering.n_levels=1", f"clustering.n_clusters=[{K}]", "clustering.n_iters=8",
                           "clustering.n_resampling_steps=2", "clustering.sample_size=25",
                           "clustering.init_sample_size=500", "clustering.seed=2", "clustering.distance=l2",
                           *settings]).clustering
    tables = hierarchy._level_on_spark(cfg, 1, points, N, K, DIM, "level 1")
    a = tables.assignments.toPandas().sort_values("point_id", ignore_index=True)
    c = tables.centroids.toPandas().sort_values("cluster_id", ignore_index=True)
    tables.release()
    return a, c, tables


def test_fits_in_stage_bound():
    assert stage_resampling.fits_in_stage(1000, 5, 128, 256)
    assert not stage_resampling.fits_in_stage(10 ** 6, 50, 1024, 256)
    assert not stage_resampling.fits_in_stage(10, 5, 8, 0)  # 0 turns it off, as for levels


@pytest.mark.parametrize("strategy, distance", [("c", "l2"), ("r", "cosine")])
def test_in_stage_equals_spark_jobs(points, strategy, distance):
    common = [f"clustering.sampling_strategy={strategy}", f"clustering.distance={distance}"]
    a_jobs, c_jobs, jobs = _level(points, [*common, "clustering.in_process_max_mb=0"])
    a_stage, c_stage, stage = _level(points, [*common, "clustering.in_process_max_mb=1"])
    assert all(e.get("in_stage") for e in stage.info.resampling) and len(stage.info.resampling) == 2
    assert not any(e.get("in_stage") for e in jobs.info.resampling)
    assert np.array_equal(a_jobs["point_id"], a_stage["point_id"])
    assert np.array_equal(a_jobs["cluster_id"], a_stage["cluster_id"])
    np.testing.assert_allclose(a_stage["distance"], a_jobs["distance"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(c_jobs["size"], c_stage["size"]) and np.array_equal(jobs.sizes, stage.sizes)
    np.testing.assert_allclose(np.stack(c_stage["centroid"]), np.stack(c_jobs["centroid"]), rtol=1e-5, atol=1e-6)
    assert stage.objective == pytest.approx(jobs.objective, rel=1e-5)
    for key in ("sizes_kmeans", "sizes_kmeans_histogram"):
        assert getattr(stage.info, key) == getattr(jobs.info, key), key
    assert stage.info.objective_kmeans == pytest.approx(jobs.info.objective_kmeans, rel=1e-5)
    for s, j in zip(stage.info.resampling, jobs.info.resampling):
        assert s["sample_points"] == j["sample_points"] and s["sizes"] == j["sizes"]
        assert s["objective"] == pytest.approx(j["objective"], rel=1e-5)
