"""Numeric kernels against brute-force numpy (no Spark)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curation_spark.method import kernels


def _brute_assign(x, c):
    d2 = ((x[:, None, :].astype(np.float64) - c[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(1), np.sqrt(d2.min(1))


def test_assign_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    c = rng.normal(size=(37, 16)).astype(np.float32)
    labels, dist = kernels.assign(x, c)
    ref_labels, ref_dist = _brute_assign(x, c)
    assert (labels == ref_labels).mean() > 0.999  # float32 ties may differ
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)


def test_assign_cosine_is_one_minus_cos():
    rng = np.random.default_rng(1)
    x = kernels.normalize_rows(rng.normal(size=(500, 8)))
    c = kernels.normalize_rows(rng.normal(size=(5, 8)))
    labels, dist = kernels.assign(x, c, "cosine")
    sims = x @ c.T
    np.testing.assert_array_equal(labels, sims.argmax(1))
    np.testing.assert_allclose(dist, 1 - sims.max(1), atol=1e-5)


def test_partial_sums_match_brute_force():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150_000, 6)).astype(np.float32)  # > one chunk
    labels = rng.integers(0, 50, size=len(x))
    labels[labels == 7] = 8  # cluster 7 empty
    sums, counts = kernels.partial_sums(x, labels, 50)
    ref = np.zeros((50, 6))
    for k in range(50):
        ref[k] = x[labels == k].astype(np.float64).sum(0)
    np.testing.assert_allclose(sums, ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=50))
    assert counts[7] == 0 and not sums[7].any()


def test_partial_sums_do_not_depend_on_threads():
    """The columns are split over faiss's threads; each is summed as one thread would."""
    import faiss

    rng = np.random.default_rng(5)
    x = rng.normal(size=(200_000, 16)).astype(np.float32)  # enough work for threads
    labels = rng.integers(0, 300, size=len(x))
    before = faiss.omp_get_max_threads()
    try:
        results = []
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            results.append(kernels.partial_sums(x, labels, 300)[0])
            block = kernels.BlockSums(x, 300)
            block.update(labels)
            moved = labels.copy()
            moved[: len(x) // 3] = rng.integers(0, 300, size=len(x) // 3)  # incremental
            block.update(moved)
            moved[: 2 * len(x) // 3] = (moved[: 2 * len(x) // 3] + 1) % 300  # most rows: summed afresh
            idx, _, sums = block.update(moved)
            np.testing.assert_allclose(sums, kernels.partial_sums(x, moved, 300)[0][idx], rtol=1e-12, atol=1e-9)
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])


def test_update_keeps_empty_cluster_centroid():
    prev = np.array([[0, 0], [5, 5], [9, 9]], dtype=np.float32)
    sums = np.array([[2.0, 4.0], [0.0, 0.0], [9.0, 3.0]])
    counts = np.array([2, 0, 3])
    new = kernels.update_centroids(sums, counts, prev)
    np.testing.assert_allclose(new, [[1, 2], [5, 5], [3, 1]])


def _potential(x, centers):
    return ((x[:, None, :] - centers[None]) ** 2).sum(-1).min(1).sum()


def test_kmeans_plus_plus_picks_distinct_data_points_and_beats_random():
    rng = np.random.default_rng(3)
    means = rng.normal(scale=10, size=(20, 4))
    x = (means[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 4))).astype(np.float32)
    centers = kernels.kmeans_plus_plus(x, 20, np.random.default_rng(0))
    assert centers.shape == (20, 4)
    rows = {tuple(r) for r in x}
    assert all(tuple(c) in rows for c in centers)
    assert len({tuple(c) for c in centers}) == 20
    pp = np.mean([_potential(x, kernels.kmeans_plus_plus(x, 20, np.random.default_rng(s))) for s in range(5)])
    rnd = np.mean([_potential(x, kernels.random_init(x, 20, np.random.default_rng(s))) for s in range(5)])
    assert pp < 0.5 * rnd
    # Same seed, same centres.
    np.testing.assert_array_equal(centers, kernels.kmeans_plus_plus(x, 20, np.random.default_rng(0)))


def test_kmeans_plus_plus_greedy_trial_count_and_bounds():
    x = np.random.default_rng(4).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(ValueError):
        kernels.kmeans_plus_plus(x, 51, np.random.default_rng(0))
    # the default is greedy k-means++'s 2 + ln(k) candidates per centre
    default = kernels.kmeans_plus_plus(x, 20, np.random.default_rng(1))
    explicit = kernels.kmeans_plus_plus(x, 20, np.random.default_rng(1), n_local_trials=2 + int(math.log(20)))
    np.testing.assert_array_equal(default, explicit)
    assert not np.array_equal(default, kernels.kmeans_plus_plus(x, 20, np.random.default_rng(1), n_local_trials=1))
    dup = np.zeros((10, 2), np.float32)  # all points identical: still returns k rows
    assert kernels.kmeans_plus_plus(dup, 3, np.random.default_rng(0)).shape == (3, 2)


def _reference_kmeans_plus_plus(points, n_clusters, rng):
    """The straightforward greedy k-means++ (an (n, trials) float64 layout, fresh arrays
    every step) that kernels.kmeans_plus_plus computes in place, candidate-major."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    n, d = points.shape
    trials = 2 + int(math.log(n_clusters))
    x64 = points.astype(np.float64)
    sq = (x64 * x64).sum(axis=1)

    def sq_dists(cand):
        return np.maximum(sq[:, None] - 2.0 * (x64 @ cand.T) + (cand * cand).sum(axis=1)[None, :], 0.0)

    centers = np.empty((n_clusters, d), dtype=np.float32)
    first = int(rng.integers(n))
    centers[0] = points[first]
    closest = sq_dists(x64[first:first + 1])[:, 0]
    potential = closest.sum()
    for c in range(1, n_clusters):
        if potential <= 0:
            cand = rng.integers(n, size=trials)
        else:
            cumulative = np.cumsum(closest)
            cand = np.minimum(np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right"), n - 1)
        new = np.minimum(closest[:, None], sq_dists(x64[cand]))
        totals = new.sum(axis=0)
        best = int(np.argmin(totals))
        centers[c] = points[cand[best]]
        closest, potential = new[:, best], totals[best]
    return centers


@pytest.mark.parametrize("n, d, k, scale", [(6000, 2, 300, 5.0), (3000, 16, 60, 0.1), (800, 128, 40, 30.0)])
def test_kmeans_plus_plus_equals_the_straightforward_formulation(n, d, k, scale):
    rng = np.random.default_rng(n + d)
    x = (rng.normal(size=(n, d)) * scale).astype(np.float32)
    x[: n // 10] = x[0]  # duplicates: zero distances
    for seed in (0, 1):
        np.testing.assert_array_equal(kernels.kmeans_plus_plus(x, k, np.random.default_rng(seed)),
                                      _reference_kmeans_plus_plus(x, k, np.random.default_rng(seed)))


def test_lloyd_decreases_objective_and_matches_faiss():
    import faiss

    rng = np.random.default_rng(5)
    x = rng.normal(size=(5000, 8)).astype(np.float32)
    init = x[:30].copy()
    ours = kernels.lloyd(x, init, 10)
    km = faiss.Kmeans(8, 30, niter=10, seed=1, max_points_per_centroid=10**7)
    km.train(x, init_centroids=init)
    _, d = kernels.assign(x, km.centroids)
    faiss_obj = float((d.astype(np.float64) ** 2).sum())
    assert abs(ours.objective - faiss_obj) / faiss_obj < 0.01


def test_split_cluster_dense_ids_and_nonempty():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(loc=m, size=(50, 2)) for m in (-10, 0, 10)]).astype(np.float32)
    labels, dist, cents = kernels.split_cluster(x, 4, 10, seed=0)
    assert len(cents) <= 4 and set(labels) == set(range(len(cents)))
    assert np.bincount(labels).min() > 0
    one = kernels.split_cluster(x[:1], 4, 10, seed=0)
    assert len(one[2]) == 1 and one[0].tolist() == [0]


def test_size_stats_gini():
    assert kernels.size_stats(np.array([5, 5, 5, 5]))["gini"] == pytest.approx(0.0)
    assert kernels.size_stats(np.array([0, 0, 0, 10]))["gini"] == pytest.approx(0.75)
    s = kernels.size_stats(np.array([1, 2, 3, 10]))
    assert (s["min"], s["median"], s["max"]) == (1, 2.5, 10)
