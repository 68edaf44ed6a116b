"""Large K: index-assisted assignment against brute force, incremental block sums, and a
level with K large relative to N through the Spark engine end to end."""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark.method import candidate_search as search
from curation_spark.method import centroid_index as ci
from curation_spark.method import sample_checks as sc
from curation_spark.method import kernels
from curation_spark import synth

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow


def _mixture(n: int, dim: int, comps: int, seed: int = 0) -> np.ndarray:
    t = synth.make_gaussian_mixture(n, dim, comps, seed=seed)
    return np.asarray(t.column("embedding").combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(n, dim)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_index_assignment_agrees_with_brute_force(distance):
    x = _mixture(30_000, 16, 60)
    if distance == "cosine":
        x = kernels.normalize_rows(x)
    k = 1500
    rng = np.random.default_rng(1)
    c = x[rng.choice(len(x), k, replace=False)].copy()
    assigner = ci.IndexAssigner(x, distance, n_probes=16, n_neighbours=64)
    agreements, paths = [], []
    for _ in range(10):
        labels, _, stats = assigner.assign(c, seed=0)
        exact, _ = kernels.assign(x, c, distance)
        agreements.append(float((labels == exact).mean()))
        paths.append(stats.path)
        assert stats.agreement_rows >= sc.AGREEMENT_SAMPLE_ROWS  # the wide check's rows when it decided
        assert 0 <= stats.agreement_hits <= stats.agreement_rows
        sums, counts = kernels.partial_sums(x, labels, k)
        c = kernels.update_centroids(sums, counts, c, distance)
    # Whole-block agreement (not only the engine's sample) is on target once centroids settle,
    # and the cheap prior path takes over.
    assert min(agreements[2:]) >= 0.99, agreements
    assert "prior" in paths[2:], paths
    print("agreement per iteration", agreements, paths)
    # The objective of the index assignment is within 0.1% of the exact one.
    labels, _, _ = assigner.assign(c)
    exact, exact_d = kernels.assign(x, c, distance)
    ours = search.exact_distances(x, c, labels, distance)
    assert kernels.objective_terms(ours, distance) <= kernels.objective_terms(exact_d, distance) * 1.001


def test_the_probe_count_is_chosen_on_the_sample_before_the_block_is_searched():
    """No previous labels: the probe counts from ``index_probes`` doubled are tried on the
    sample, narrowest first, and the block is searched at the first on target (so this very
    call meets it); with target 1.0 and no exact path, the widest (every list) if none is."""
    x = _mixture(5_000, 16, 10)
    c = x[:800].copy()
    assigner = ci.IndexAssigner(x, "l2", n_probes=1, n_neighbours=8)
    labels, _, stats = assigner.assign(c)
    assert stats.path == "probe" and stats.n_probes == assigner.n_probes
    assert stats.agreement_rows - stats.agreement_hits <= sc.allowed_misses(stats.agreement_rows, 0.99)
    want, _ = kernels.assign(x, c, "l2")
    assert (labels == want).mean() >= 0.98
    strict = ci.IndexAssigner(x, "l2", n_probes=1, n_neighbours=8, target=1.0)
    labels, _, stats = strict.assign(c)
    assert stats.agreement_hits == stats.agreement_rows and strict.n_probes >= 1


def test_auto_takes_the_exact_path_where_the_index_costs_more(monkeypatch):
    """``assignment: auto`` (an exact fallback): the path follows the counted cost model
    (here made to say "exact is cheap" and then "the index is cheap"), the exact path's
    labels are the exact ones, and the same data take the same paths (no timings)."""
    from curation_spark.method import bounded_assign
    from curation_spark.method.bounded_assign import BoundedAssigner

    x = _mixture(20_000, 16, 40)
    c = x[:: len(x) // 2000][:2000].copy()
    monkeypatch.setattr(ci, "COST_GROUP_MAC", 1e-6)  # grouped GEMMs made dear: exact is cheaper
    monkeypatch.setattr(ci, "COST_FIXED_MAC", 1e-6)
    exact_path = BoundedAssigner(x, "l2")
    assigner = ci.IndexAssigner(x, "l2", n_probes=4, n_neighbours=16, exact=exact_path.assign,
                                exact_cost=exact_path.modelled_cost)
    labels, dist, stats = assigner.assign(c)
    assert stats.path == "exact" and dist is not None
    want, _ = kernels.assign(x, c, "l2")
    assert np.array_equal(labels, want) and np.array_equal(dist, search.exact_distances(x, c, want))
    _, _, stats = assigner.assign(c)  # prior on target (exact labels, same centroids) but dearer
    assert stats.path == "exact"
    monkeypatch.setattr(ci, "COST_GROUP_MAC", 1e-15)
    monkeypatch.setattr(ci, "COST_FIXED_MAC", 1e-15)
    monkeypatch.setattr(ci, "COST_EXACT_MAC", 1e-6)  # exact search made dear: the prior path
    monkeypatch.setattr(bounded_assign, "COST_SEARCH_MAC", 1e-6)
    monkeypatch.setattr(bounded_assign, "COST_BOUND_ROW", 1e-3)
    _, _, stats = assigner.assign(c)
    assert stats.path == "prior"
    fresh = ci.IndexAssigner(x, "l2", n_probes=4, n_neighbours=16, exact=BoundedAssigner(x, "l2").assign)
    _, dist, stats = fresh.assign(c)
    assert stats.path == "probe" and dist is None  # no labels for a prior yet, exact search dear: probe


def test_no_probe_dearer_than_exact_search_is_tried(monkeypatch):
    """A probe count is tried only while it costs less than exact search: with exact search
    priced between the probe at 1 and at 2 probes and a target the 1-probe search misses,
    the call searches exactly (the probe does not meet the target, exact search does)."""
    x = _mixture(5_000, 16, 10)
    c = x[:800].copy()
    with_exact = ci.IndexAssigner(x, "l2", n_probes=1, n_neighbours=8, target=1.0,
                                  exact=lambda cents: kernels.assign(x, cents, "l2"))
    lists = ci.CoarseLists.build(c, ci.train_coarse(c, 1), 2)
    starts = lists.start(x[with_exact.sample])
    narrow, wide = with_exact._probe_cost(lists, 1, starts), with_exact._probe_cost(lists, 2, starts)
    assert narrow < wide
    monkeypatch.setattr(with_exact, "exact_cost", lambda k: (narrow + wide) / 2)
    labels, dist, stats = with_exact.assign(c)
    assert stats.path == "exact" and np.array_equal(labels, kernels.assign(x, c, "l2")[0])


def test_exact_distances_are_direct():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    c = rng.normal(size=(7, 5)).astype(np.float32)
    labels = rng.integers(0, 7, size=100)
    want = np.sqrt(((x.astype(np.float64) - c[labels]) ** 2).sum(axis=1))
    np.testing.assert_allclose(search.exact_distances(x, c, labels), want, rtol=1e-6)
    xn, cn = kernels.normalize_rows(x), kernels.normalize_rows(c)
    np.testing.assert_allclose(search.exact_distances(xn, cn, labels, "cosine"),
                               1 - (xn * cn[labels]).sum(axis=1), atol=1e-6)


def test_neighbour_graph_holds_each_centroid_and_valid_ids():
    x = _mixture(3_000, 8, 5)
    c = x[:300].copy()
    coarse = ci.train_coarse(c, 4)
    lists = ci.CoarseLists.build(c, coarse, 4)
    graph = ci.neighbour_graph(lists, c, np.arange(300), 16)
    assert graph.shape == (300, 16)
    assert ((graph >= 0) & (graph < 300)).all()
    assert (graph == np.arange(300)[:, None]).any(axis=1).all()


def test_block_sums_incremental_equal_fresh_sums():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4_000, 6)).astype(np.float32)
    k = 50
    dense = kernels.BlockSums(x, k)
    sparse = kernels.BlockSums(x, k, dense_max_bytes=0)
    labels = rng.integers(0, k - 1, size=len(x))  # cluster k-1 stays empty
    for step in range(4):
        if step:
            moved = rng.choice(len(x), 300, replace=False)
            labels[moved] = rng.integers(0, k - 1, size=300)
        want_sums, want_counts = kernels.partial_sums(x, labels, k)
        for sums in (dense, sparse):
            idx, counts, s = sums.update(labels)
            assert (k - 1) not in idx
            np.testing.assert_array_equal(counts, want_counts[idx])
            np.testing.assert_allclose(s, want_sums[idx], rtol=1e-12, atol=1e-9)
    assert dense.dense and not sparse.dense


def test_large_k_relative_to_n_runs_end_to_end(spark, tmp_dir):
    """N = 20,000, K = 5,000 through the Spark barrier engine: two-level init, index
    assignment (auto picks it at K >= 4096), agreement logged, a resampling step whose
    reassignment goes through the index, exact distances stored."""
    from pyspark.sql import functions as F

    from curation_spark import pipeline
    from curation_spark.config import load_config
    from curation_spark.io.tables import read_table

    data = f"{tmp_dir}/mix"
    pipeline.write_synthetic(spark, synth.make_gaussian_mixture(20_000, 8, 40, seed=5), data, "delta")
    run = f"{tmp_dir}/run"
    config = load_config([], [f"input.path={data}", f"output.path={run}", "clustering.n_clusters=[5000]",
                              "clustering.n_iters=4", "clustering.in_process_max_mb=0", "clustering.seed=3",
                              # one resampling step: the reassignment to fresh centroids takes the
                              # index's probe path in assign_points
                              "clustering.n_resampling_steps=1", "clustering.sample_size=3"])
    summary = pipeline.cluster(config, spark)
    info = summary.levels[0]
    assert info.engine == "barrier" and info.n_clusters == 5000
    history = info.kmeans_history
    assert all(h["assignment"] == "index" for h in history)
    assert all(0.9 <= h["agreement"] <= 1.0 for h in history), history
    assert len(info.resampling) == 1 and info.resampling[0]["sample_points"] >= 5000
    cents = read_table(spark, f"{run}/level_1/centroids").toPandas()
    assign = read_table(spark, f"{run}/level_1/assignments")
    assert len(cents) == 5000 and int(cents["size"].sum()) == 20_000
    # Stored distances are the exact distances to the stored centroid.
    x = _mixture(20_000, 8, 40, seed=5)
    a = assign.orderBy(F.col("point_id")).toPandas()
    c = np.stack(cents.sort_values("cluster_id")["centroid"].to_numpy()).astype(np.float32)
    want = search.exact_distances(x[a["point_id"].to_numpy()], c, a["cluster_id"].to_numpy())
    np.testing.assert_allclose(a["distance"].to_numpy(), want, rtol=1e-5, atol=1e-6)
    # update's checked assignment takes the same index path, and sets bad rows aside
    from curation_spark.curation import hierarchy
    from curation_spark.engine import kmeans

    import dataclasses

    params = hierarchy.level_params(dataclasses.replace(config.clustering, distance="l2"), 1, 5000)
    rows = [(i, x[i].tolist()) for i in range(200)] + [(900_001, [float("nan")] * 8), (900_002, [1.0] * 9)]
    points = spark.createDataFrame(rows, "point_id long, embedding array<float>")
    checked = kmeans.assign_points(points, c, params=params, with_checks=True).toPandas().set_index("point_id")
    plain = kmeans.assign_points(points.where("point_id < 900000"), c, params=params).toPandas().set_index("point_id")
    assert checked.loc[900_001, "embedding_dim"] == 8 and checked.loc[900_002, "embedding_dim"] == 9
    assert checked.loc[[900_001, 900_002], "cluster_id"].isna().all()
    good = checked.drop([900_001, 900_002])
    assert (good["cluster_id"].astype(int) == plain.loc[good.index, "cluster_id"]).all()
    np.testing.assert_allclose(good["norm"], np.linalg.norm(x[good.index.to_numpy()], axis=1), rtol=1e-5)
