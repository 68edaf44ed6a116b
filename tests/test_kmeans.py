"""The distributed k-means engine against numpy/faiss, determinism, edge cases."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from curation_spark.method import kernels
from curation_spark.engine import kmeans
from curation_spark import synth
from curation_spark.method.lloyd import KMeansParams


@pytest.fixture(scope="module")
def mixture(spark):
    table = synth.make_gaussian_mixture(20_000, 16, 30, seed=1)
    x = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    df = spark.createDataFrame(table).selectExpr("id as point_id", "embedding").repartition(3).cache()
    df.count()
    yield df, x, table.column("id").to_numpy()
    df.unpersist()


def _objective(x, centroids, distance="l2"):
    xx = kernels.normalize_rows(x) if distance == "cosine" else x
    cc = kernels.normalize_rows(centroids) if distance == "cosine" else centroids
    _, d = kernels.assign(xx, cc, distance)
    return kernels.objective_terms(d, distance)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("engine", ["barrier", pytest.param("passes", marks=pytest.mark.slow)])
def test_same_objective_as_numpy_lloyd_and_faiss(mixture, distance, engine):
    import faiss

    df, x, _ = mixture
    init = x[np.random.default_rng(0).choice(len(x), 40, replace=False)]
    params = KMeansParams(n_clusters=40, n_iters=8, distance=distance, engine=engine)
    result = kmeans.fit(df, params, init_centroids=init, stage="test")
    ref = kernels.lloyd(x, init, 8, distance)
    ours = _objective(x, result.centroids, distance)
    print(f"\n{engine}/{distance}: ours {ours:.6g}  numpy Lloyd {ref.objective:.6g}")
    assert abs(ours - ref.objective) / ref.objective < 0.01
    assert result.objective == pytest.approx(ours, rel=1e-4)
    if distance == "l2":
        km = faiss.Kmeans(16, 40, niter=8, seed=1, max_points_per_centroid=10**7)
        km.train(x, init_centroids=init)
        faiss_obj = _objective(x, km.centroids)
        print(f"faiss.Kmeans {faiss_obj:.6g}")
        assert abs(ours - faiss_obj) / faiss_obj < 0.01
    assert int(result.sizes.sum()) == len(x)
    assign = result.assignments
    assert assign.count() == len(x)
    assert assign.select("point_id").distinct().count() == len(x)
    result.unpersist()


@pytest.mark.slow
def test_deterministic_and_engines_agree(mixture):
    df, _, _ = mixture
    runs = [kmeans.fit(df, KMeansParams(n_clusters=25, n_iters=5, seed=7, engine=e), stage="det")
            for e in ("barrier", "barrier", "passes")]
    np.testing.assert_array_equal(runs[0].centroids, runs[1].centroids)  # bit-identical
    np.testing.assert_array_equal(runs[0].sizes, runs[1].sizes)
    np.testing.assert_allclose(runs[0].centroids, runs[2].centroids, rtol=1e-6, atol=1e-6)
    other = kmeans.fit(df, KMeansParams(n_clusters=25, n_iters=5, seed=8), stage="det")
    assert not np.array_equal(runs[0].centroids, other.centroids)
    for r in runs + [other]:
        r.unpersist()


def test_kmeans_plus_plus_init_converges_near_truth(mixture):
    df, x, _ = mixture
    result = kmeans.fit(df, KMeansParams(n_clusters=30, n_iters=15, seed=0), stage="pp")
    rnd = kmeans.fit(df, KMeansParams(n_clusters=30, n_iters=15, seed=0, init="random"), stage="rnd")
    print(f"\nobjective k-means++ {result.objective:.6g}, random init {rnd.objective:.6g}")
    assert result.objective <= rnd.objective * 1.05
    assert len(result.history) >= 1 and {"iteration", "objective", "shift", "seconds"} <= set(result.history[0])
    result.unpersist()
    rnd.unpersist()


def test_empty_cluster_keeps_its_centroid(spark):
    rows = [(i, [float(i % 5), 0.0]) for i in range(50)]
    df = spark.createDataFrame(rows, "point_id long, embedding array<float>")
    far = [1000.0, 1000.0]
    init = np.array([[0.0, 0.0], [4.0, 0.0], far], dtype=np.float32)
    result = kmeans.fit(df, KMeansParams(n_clusters=3, n_iters=5), init_centroids=init, stage="empty")
    assert result.sizes[2] == 0
    np.testing.assert_array_equal(result.centroids[2], far)
    assert result.history[0]["empty_clusters"] == 1
    result.unpersist()


def test_more_clusters_than_points_is_clamped(spark, caplog):
    df = spark.createDataFrame([(i, [float(i), 1.0]) for i in range(7)], "point_id long, embedding array<float>")
    with caplog.at_level(logging.WARNING):
        result = kmeans.fit(df, KMeansParams(n_clusters=50, n_iters=3), stage="clamp")
    assert len(result.centroids) == 7 and result.sizes.sum() == 7
    assert "more than the 7 points" in caplog.text
    result.unpersist()


def test_string_ids_and_assign_points(spark):
    df = spark.createDataFrame([(f"p{i}", [float(i), 0.0]) for i in range(20)], "point_id string, embedding array<float>")
    result = kmeans.fit(df, KMeansParams(n_clusters=2, n_iters=5), stage="str")
    rows = {r["point_id"]: r["cluster_id"] for r in result.assignments.collect()}
    assert len(rows) == 20 and rows["p0"] != rows["p19"]
    again = {r["point_id"]: r["cluster_id"] for r in kmeans.assign_points(df, result.centroids).collect()}
    assert again == rows
    result.unpersist()


def test_tolerance_stops_early(mixture):
    df, _, _ = mixture
    result = kmeans.fit(df, KMeansParams(n_clusters=10, n_iters=50, tol=1e-2), stage="tol")
    assert len(result.history) < 50
    assert result.history[-1]["shift"] <= 1e-2
    result.unpersist()


def test_large_point_sets_are_cached_on_disk_only():
    from pyspark import StorageLevel

    assert kmeans.points_storage_level(10_000, 128) == StorageLevel.MEMORY_AND_DISK
    assert kmeans.points_storage_level(10_000_000, 128) == StorageLevel.DISK_ONLY  # 5.1 GB of float32
    limit_rows = kmeans.MEMORY_CACHE_MAX_BYTES // (4 * 128)
    assert kmeans.points_storage_level(limit_rows, 128) == StorageLevel.MEMORY_AND_DISK
    assert kmeans.points_storage_level(limit_rows + 1, 128) == StorageLevel.DISK_ONLY


def test_iteration_log_is_written_and_never_fails_the_fit(spark, tmp_path, monkeypatch):
    df = spark.createDataFrame([(i, [float(i % 5), float(i // 5)]) for i in range(40)],
                               "point_id long, embedding array<float>")
    log_path = tmp_path / "iterations.jsonl"
    monkeypatch.setenv("CURATION_SPARK_ITERATION_LOG", str(log_path))
    result = kmeans.fit(df, KMeansParams(n_clusters=4, n_iters=3, engine="barrier"), stage="watched")
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["iteration"] for e in lines] == [e["iteration"] for e in result.history]
    assert all(e["stage"] == "watched" and "task_attempt_id" in e and "pid" in e for e in lines)
    result.unpersist()
    # A path the tasks cannot write (its folder does not exist): the fit still succeeds.
    monkeypatch.setenv("CURATION_SPARK_ITERATION_LOG", str(tmp_path / "missing" / "log.jsonl"))
    again = kmeans.fit(df, KMeansParams(n_clusters=4, n_iters=3, engine="barrier"), stage="watched")
    np.testing.assert_array_equal(again.centroids, result.centroids)
    again.unpersist()
