"""Small levels in one process (curation_spark.method.inprocess): the rows it picks are the rows
Spark picks, and a run writes the same tables and run.json statistics as the Spark path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation_spark.curation import hierarchy
from curation_spark.method import inprocess
from curation_spark.engine import kmeans
from curation_spark.method import lloyd
from curation_spark import pipeline, synth
from curation_spark.config import load_config
from curation_spark.io.tables import read_table, to_points

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

N, DIM = 3000, 8
SPARK_PATH = ["clustering.in_process_max_mb=0"]
# Two levels: level 1 with `c` resampling on a hashed init sample (init_sample_size < the
# points and < each resampling sample) and a 3-way split; level 2 (on the split centroids,
# ids cast to long, which changes their hash) with `r` resampling.
LEVELS = ["clustering.n_levels=2", "clustering.n_clusters=[20,6]", "clustering.n_iters=10",
          "clustering.n_resampling_steps=[2,1]", "clustering.sample_size=[30,3]", "clustering.sampling_strategy=[c,r]",
          "clustering.n_splits=[3,1]", "clustering.init_sample_size=400", "clustering.seed=4"]


# ----------------------------------------------------------------------------- numeric


def test_first_per_cluster_orders_by_key_then_id():
    labels = np.array([1, 0, 1, 1, 0, 2, 1])
    key = np.array([5, 3, 5, 1, 2, 9, 0])
    # cluster 0: rows 4 (2), 1 (3); cluster 1: rows 6 (0), 3 (1), then 0 and 2 tie at 5 -> id order
    assert inprocess.first_per_cluster(labels, key, 2).tolist() == [1, 3, 4, 5, 6]
    assert inprocess.first_per_cluster(labels, key, 3).tolist() == [0, 1, 3, 4, 5, 6]
    assert inprocess.first_per_cluster(labels, key.astype(np.float32), 1).tolist() == [4, 5, 6]


def test_init_sample_rows_takes_all_or_the_smallest_keys_under_the_cut():
    key = np.array([10, -(2 ** 63), 2 ** 63 - 1, -5, 0, -(2 ** 62)], dtype=np.int64)
    assert inprocess.init_sample_rows(6, 6, None).tolist() == list(range(6))
    # cut for 2 of 6 rows: fraction 0.668 of the range, about 3.1e18: keeps all but 2**63 - 1
    assert inprocess.init_sample_rows(2, 6, key).tolist() == [1, 5]
    assert inprocess.init_sample_rows(4, 6, key).tolist() == [1, 3, 4, 5]


def test_numpy_blas_threads_sets_and_restores():
    blas = inprocess._numpy_blas()
    if blas is None:
        pytest.skip("numpy's OpenBLAS thread controls are not reachable here")
    get, _ = blas
    before = get()
    with inprocess.numpy_blas_threads(1):
        assert get() == 1
        with inprocess.numpy_blas_threads(None):
            assert get() == 1
    assert get() == before


def test_path_decision_counts_float32_embeddings():
    cfg = load_config([], ["clustering.in_process_max_mb=1"]).clustering
    assert hierarchy.in_process_decision(cfg, 2 ** 20 // (4 * 64), 64)[0]  # exactly 1 MB
    assert not hierarchy.in_process_decision(cfg, 2 ** 20 // (4 * 64) + 1, 64)[0]
    off = load_config([], ["clustering.in_process_max_mb=0"]).clustering
    assert hierarchy.in_process_decision(off, 10, 2) == (False, "clustering.in_process_max_mb=0 disables the "
                                                                "in-process path")


def test_plan_asks_for_every_hash_key_it_uses():
    cfg = load_config([], ["clustering.n_clusters=[20]", "clustering.n_resampling_steps=3", "clustering.sample_size=30",
                           "clustering.sampling_strategy=r", "clustering.init_sample_size=400", "clustering.distance=l2"]).clustering
    plan = hierarchy.level_plan(cfg, 1, 20)
    seeds = plan.hash_seeds(N, DIM)
    assert seeds == sorted({plan.kmeans_params[0].seed, *(p.seed for p in plan.kmeans_params[1:]),
                            *plan.resampling_seeds})
    # Small levels with the default init sample and `c` resampling need no key at all.
    cfg = load_config([], ["clustering.n_clusters=[20]", "clustering.n_resampling_steps=3",
                           "clustering.sample_size=30", "clustering.distance=l2"]).clustering
    assert hierarchy.level_plan(cfg, 1, 20).hash_seeds(N, DIM) == []
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, DIM)).astype(np.float32)
    with pytest.raises(KeyError, match="no xxhash64 keys for seed"):
        inprocess.cluster_level_in_memory(x, {}, hierarchy.level_plan(
            load_config([], ["clustering.n_clusters=[20]", "clustering.init_sample_size=100",
                              "clustering.distance=l2"]).clustering, 1, 20, n_points=N))


def test_the_driver_path_reports_every_iteration():
    """``on_iteration`` (the driver's progress bar) sees each Lloyd iteration of the level's
    k-means and of every resampling step, in order."""
    cfg = load_config([], ["clustering.n_clusters=[20]", "clustering.n_iters=4", "clustering.n_resampling_steps=2",
                           "clustering.distance=l2"]).clustering
    plan = hierarchy.level_plan(cfg, 1, 20, n_points=N)
    x = np.random.default_rng(1).normal(size=(N, DIM)).astype(np.float32)
    seen = []
    result = inprocess.cluster_level_in_memory(x, {}, plan, on_iteration=seen.append)
    assert plan.sample_size == round(N / 40) and len(result.resampling) == 2
    assert len(seen) > len(result.kmeans.history) and seen[:len(result.kmeans.history)] == result.kmeans.history
    assert sum(p.n_iters for p in plan.kmeans_params) >= len(seen)


# ----------------------------------------------------------------------------- against Spark


@pytest.fixture(scope="module")
def mixture(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("inprocess") / "mixture")
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(N, DIM, 12, seed=3), path, "delta")
    return path


def test_samples_are_the_rows_spark_picks(spark, mixture):
    """The init sample (smaller than the points) and the per-cluster `r` and `c` samples,
    picked in-process from keys Spark computed, are exactly the rows Spark's own
    ``kmeans.init_sample`` and ``row_number()`` window pick."""
    points = to_points(read_table(spark, mixture), "id", "embedding").repartition(3)
    seed_init, seed_r = 1001, 7920
    ids, x, keys = hierarchy.collect_level(points, DIM, [seed_init, seed_r])
    assert np.all(np.diff(ids.to_numpy()) > 0) and x.shape == (N, DIM)

    got = x[inprocess.init_sample_rows(300, N, keys[seed_init])]
    want = kmeans.init_sample(points, 300, N, DIM, seed_init)
    assert len(got) == 300 and np.array_equal(got, want)

    centroids = x[np.random.default_rng(1).choice(N, 25, replace=False)]
    assignments = kmeans.assign_points(points, centroids).cache()
    a = assignments.toPandas().sort_values("point_id")
    assert np.array_equal(a["point_id"].to_numpy(), ids.to_numpy())
    labels, dist = a["cluster_id"].to_numpy(), a["distance"].to_numpy()
    for strategy, key in (("r", keys[seed_r]), ("c", dist)):
        rows = inprocess.first_per_cluster(labels, key, 7)
        sample = hierarchy.resampling_sample(points, assignments, 7, strategy, seed_r)
        want = np.sort(np.array([r["point_id"] for r in sample.select("point_id").collect()]))
        assert np.array_equal(ids.to_numpy()[rows], want), strategy
    assignments.unpersist()


@pytest.fixture(scope="module")
def both_paths(spark, mixture, tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """LEVELS on the Spark path and in-process: path -> (run folder, run.json levels)."""
    base = tmp_path_factory.mktemp("paths")
    return {path: (str(base / path), _run(spark, mixture, str(base / path), LEVELS + extra))
            for path, extra in (("spark", SPARK_PATH), ("inproc", []))}


def _tables(spark, run: str, level: int):
    a = read_table(spark, f"{run}/level_{level}/assignments")
    c = read_table(spark, f"{run}/level_{level}/centroids")
    return a, a.toPandas().sort_values("point_id", ignore_index=True), c, c.toPandas().sort_values(
        "cluster_id", ignore_index=True)


def _run(spark, data: str, out: str, settings: list[str]) -> dict:
    pipeline.cluster(load_config([], [f"input.path={data}", f"output.path={out}", *settings]), spark)
    return json.loads(Path(out, "run.json").read_text())["levels"]


def test_in_process_equals_spark_path(spark, both_paths):
    """Same config on both paths: every point gets the same cluster (no float-rounding tie
    flipped one here), distances and centroids agree to float32 rounding, objectives to
    1e-5, and run.json holds the same statistics under the same keys."""
    spark_run, on_spark = both_paths["spark"]
    inproc_run, in_proc = both_paths["inproc"]
    assert sorted(on_spark) == sorted(in_proc) == ["1", "2"]
    for level in sorted(on_spark, key=int):
        s, p = on_spark[level], in_proc[level]
        assert s["engine"] == "barrier" and p["engine"] == "in-process"
        assert set(s) == set(p)
        assert [set(h) for h in s["kmeans_history"]] == [set(h) for h in p["kmeans_history"]]
        assert [set(e) for e in s["resampling"]] == [set(e) for e in p["resampling"]]
        for key in ("n_points", "n_clusters", "n_clusters_requested", "sizes", "sizes_kmeans", "sizes_histogram",
                    "sizes_kmeans_histogram", "split"):
            assert s.get(key) == p.get(key), key
        assert [e["sample_points"] for e in s["resampling"]] == [e["sample_points"] for e in p["resampling"]]
        assert [e["sizes"] for e in s["resampling"]] == [e["sizes"] for e in p["resampling"]]
        for key in ("objective", "objective_kmeans"):
            assert p[key] == pytest.approx(s[key], rel=1e-5), key
        assert [e["objective"] for e in p["resampling"]] == pytest.approx([e["objective"] for e in s["resampling"]],
                                                                          rel=1e-5)
        assert [h["objective"] for h in p["kmeans_history"]] == pytest.approx(
            [h["objective"] for h in s["kmeans_history"]], rel=1e-5)

        sa_df, sa, sc_df, sc = _tables(spark, spark_run, int(level))
        pa_df, pa_, pc_df, pc = _tables(spark, inproc_run, int(level))
        assert sa_df.dtypes == pa_df.dtypes and sc_df.dtypes == pc_df.dtypes
        assert np.array_equal(sa["point_id"], pa_["point_id"])
        assert np.array_equal(sa["cluster_id"], pa_["cluster_id"])
        np.testing.assert_allclose(pa_["distance"], sa["distance"], rtol=1e-5, atol=1e-6)
        for col in ("cluster_id", "size", "flat_size"):
            assert np.array_equal(sc[col], pc[col]), col
        assert sc["parent_id"].isna().equals(pc["parent_id"].isna())
        assert np.array_equal(sc["parent_id"].fillna(-1), pc["parent_id"].fillna(-1))
        np.testing.assert_allclose(np.stack(pc["centroid"]), np.stack(sc["centroid"]), rtol=1e-5, atol=1e-6)


def test_cosine_kmeans_and_reassignment_equal_spark(spark, mixture):
    """Cosine, where both sides normalise: the barrier engine and the in-process k-means
    (hashed init sample) give the same clusters, and reassigning to other centroids (the
    resampling step) equals ``kmeans.assign_points``."""
    points = to_points(read_table(spark, mixture), "id", "embedding")
    params = lloyd.KMeansParams(n_clusters=15, n_iters=8, distance="cosine", seed=9, init_sample_size=300)
    ids, x, keys = hierarchy.collect_level(points, DIM, [params.seed])
    on_spark = kmeans.fit(points, params, stage="cosine", n_points=N, dim=DIM)
    in_proc = inprocess.fit_in_memory(x, params, keys, "cosine")
    got = on_spark.assignments.toPandas().sort_values("point_id")
    on_spark.unpersist()
    assert np.array_equal(got["point_id"], ids.to_numpy())
    assert np.array_equal(got["cluster_id"], in_proc.labels)
    np.testing.assert_allclose(in_proc.dist, got["distance"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(in_proc.centroids, on_spark.centroids, rtol=1e-5, atol=1e-6)
    assert np.array_equal(in_proc.sizes, on_spark.sizes)
    assert in_proc.objective == pytest.approx(on_spark.objective, rel=1e-5)
    assert [set(h) for h in in_proc.history] == [set(h) for h in on_spark.history]

    other = x[np.random.default_rng(2).choice(N, 12, replace=False)] * 3.0  # not unit length
    want = kmeans.assign_points(points, other, "cosine").toPandas().sort_values("point_id")
    labels, dist = inprocess.reassign(x, other, "cosine")
    assert np.array_equal(want["cluster_id"], labels)
    np.testing.assert_allclose(dist, want["distance"], rtol=1e-5, atol=1e-6)


def test_in_process_run_is_deterministic(spark, mixture, both_paths, tmp_dir):
    """Same config twice: bit-identical tables (the level is clustered in one process, in
    id order, so no partitioning or scheduling can change a sum)."""
    first_run, first = both_paths["inproc"]
    second = _run(spark, mixture, f"{tmp_dir}/again", LEVELS)
    assert [first[lv]["objective"] for lv in ("1", "2")] == [second[lv]["objective"] for lv in ("1", "2")]
    for level in (1, 2):
        for table in ("assignments", "centroids"):
            a = read_table(spark, f"{first_run}/level_{level}/{table}").toPandas()
            b = read_table(spark, f"{tmp_dir}/again/level_{level}/{table}").toPandas()
            key = "point_id" if table == "assignments" else "cluster_id"
            a, b = a.sort_values(key, ignore_index=True), b.sort_values(key, ignore_index=True)
            if table == "centroids":
                assert np.array_equal(np.stack(a.pop("centroid")), np.stack(b.pop("centroid")))
            assert a.equals(b), (level, table)
