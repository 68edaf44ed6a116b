"""Exact assignment with bounds (curation_spark.method.bounded_assign): numpy/faiss only, no Spark.

The result must be the nearest centroid of every point (checked in float64 against brute
force, up to float32 near-ties), while most points are settled without a full search.
"""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark.method import bounded_assign, kernels

N, DIM, K = 6000, 16, 200


@pytest.fixture(autouse=True)
def candidate_test_on_small_blocks(monkeypatch):
    """These blocks are below the size from which the candidate test pays: test it anyway."""
    monkeypatch.setattr(bounded_assign, "CANDIDATE_MIN_VALUES", 0)
    monkeypatch.setattr(bounded_assign, "COST_SEARCH_MAC", 1.0)  # and as if a search were dear: always pays


def _mixture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, DIM)) * 4.0
    return (centres[rng.integers(60, size=N)] + rng.normal(size=(N, DIM))).astype(np.float32)


def _brute(x: np.ndarray, c: np.ndarray, distance: str) -> np.ndarray:
    """(n, k) float64 distances in the reported unit."""
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    if distance == "cosine":
        return 1.0 - x64 @ c64.T
    return np.sqrt(((x64[:, None, :] - c64[None, :, :]) ** 2).sum(-1))


def _assert_nearest(x, c, labels, dist, distance):
    d = _brute(x, c, distance)
    best = d.min(axis=1)
    got = d[np.arange(len(x)), labels]
    # Nearest up to float32 rounding of a near-tie (relative 1e-5 of the distance).
    assert np.all(got <= best + 1e-5 * np.maximum(best, 1e-3)), np.max(got - best)
    np.testing.assert_allclose(dist, got, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_exact_over_lloyd_iterations_and_prunes(distance):
    x = _mixture()
    if distance == "cosine":
        x = kernels.normalize_rows(x)
    rng = np.random.default_rng(1)
    c = kernels.kmeans_plus_plus(x, K, rng)
    assigner = bounded_assign.BoundedAssigner(x, distance)
    full_searches, by_bound = [], []
    for _ in range(6):
        labels, dist = assigner.assign(c)
        _assert_nearest(x, c, labels, dist, distance)
        counts = assigner.counts
        assert counts.rows == counts.by_bound + counts.by_candidates + counts.searched == N
        full_searches.append(counts.searched)
        by_bound.append(counts.by_bound)
        sums, sizes = kernels.partial_sums(x, labels, K)
        c = kernels.update_centroids(sums, sizes, c, distance)
    # No history: no bound, but the probe guess lets the candidate test settle most points.
    assert by_bound[0] == 0 and full_searches[0] < 0.5 * N
    assert max(full_searches[1:]) < 0.2 * N  # afterwards the bounds settle most points
    assert max(by_bound[1:]) > 0


def test_guess_starts_the_candidate_test_and_stays_exact():
    x = _mixture(2)
    rng = np.random.default_rng(3)
    old = kernels.kmeans_plus_plus(x, K, rng)
    new = kernels.kmeans_plus_plus(x, K, np.random.default_rng(4))
    old_labels, _ = kernels.assign(x, old)
    guess = kernels.assign(old, new)[0][old_labels]  # nearest new centroid of each old one
    assigner = bounded_assign.BoundedAssigner(x, "l2")
    labels, dist = assigner.assign(new, guess=guess)
    _assert_nearest(x, new, labels, dist, "l2")
    assert assigner.counts.by_bound == 0 and assigner.counts.by_candidates > N // 2
    # A wrong guess (random labels) must be caught by the certificate, not trusted.
    bad = np.random.default_rng(6).integers(K, size=N)
    assigner = bounded_assign.BoundedAssigner(x, "l2")
    labels, dist = assigner.assign(new, guess=bad)
    _assert_nearest(x, new, labels, dist, "l2")
    assert assigner.counts.searched > N // 2


@pytest.mark.parametrize("k", [1, 2, 40])
def test_small_k_skips_the_candidate_test(k):
    x = _mixture(5)[:500]
    _iterate_exact_without_candidates(x, x[:k].copy())


def _iterate_exact_without_candidates(x, c, iters=3):
    assigner = bounded_assign.BoundedAssigner(x, "l2")
    for _ in range(iters):
        labels, dist = assigner.assign(c)
        _assert_nearest(x, c, labels, dist, "l2")
        assert assigner.counts.by_candidates == 0
        sums, sizes = kernels.partial_sums(x, labels, len(c))
        c = kernels.update_centroids(sums, sizes, c)


def test_centroid_graph_radius_is_the_first_distance_outside_the_list():
    rng = np.random.default_rng(7)
    c = rng.normal(size=(300, 8)).astype(np.float32)
    graph = bounded_assign.CentroidGraph.build(c, 10, chunk_rows=64)
    d = _brute(c, c, "l2")
    for a in (0, 17, 299):
        ranked = np.argsort(d[a], kind="stable")
        assert graph.neighbours[a, 0] == a
        assert set(graph.neighbours[a].tolist()) == set(ranked[:10].tolist())
        outside = np.setdiff1d(np.arange(300), graph.neighbours[a])
        assert graph.radius[a] <= d[a, outside].min() and graph.radius[a] == pytest.approx(d[a, ranked[10]])


def test_empty_block():
    assigner = bounded_assign.BoundedAssigner(np.zeros((0, 4), np.float32))
    labels, dist = assigner.assign(np.ones((3, 4), np.float32))
    assert labels.shape == (0,) and dist.shape == (0,)


def test_probe_guess_is_mostly_right_and_only_a_start():
    x = _mixture(10)
    c = kernels.kmeans_plus_plus(x, K, np.random.default_rng(11))
    guess = bounded_assign.probe_guess(x, c, "l2")
    exact = _brute(x, c, "l2").argmin(axis=1)
    assert guess.shape == (N,) and 0.5 < float((guess == exact).mean()) < 1.0  # inexact by design
    labels, dist = bounded_assign.BoundedAssigner(x, "l2").assign(c)  # the first call starts from it
    _assert_nearest(x, c, labels, dist, "l2")


def test_small_blocks_use_the_flat_search_instead_of_candidates(monkeypatch):
    monkeypatch.setattr(bounded_assign, "CANDIDATE_MIN_VALUES", N * DIM + 1)
    x = _mixture(8)
    _iterate_exact_without_candidates(x, kernels.kmeans_plus_plus(x, K, np.random.default_rng(9)))


def test_the_candidate_test_stops_after_its_trial_where_it_does_not_pay(monkeypatch):
    """At K = 200, D = 16 a search costs less than the candidate test of a row: only the
    trial's rows are tested, the rest searched, and the result is exact."""
    monkeypatch.setattr(bounded_assign, "COST_SEARCH_MAC", 36e-12)
    monkeypatch.setattr(bounded_assign, "CANDIDATE_TRIAL_ROWS", 500)
    x = _mixture()
    c = kernels.kmeans_plus_plus(x, K, np.random.default_rng(1))
    assigner = bounded_assign.BoundedAssigner(x, "l2")
    labels, dist = assigner.assign(c, guess=kernels.assign(x, c[::-1].copy(), "l2")[0])
    _assert_nearest(x, c, labels, dist, "l2")
    assert 0 < assigner.counts.by_candidates <= 500 and assigner.counts.searched >= N - 500


@pytest.mark.parametrize("chunk", [None, 997], ids=["one-call", "chunked"])
def test_searches_look_for_one_neighbour_where_the_bounds_do_not_pay(monkeypatch, chunk):
    """When the bound test settled too few rows, the next search keeps bounds for every
    BOUND_PROBE_STRIDE-th row only (the others look for one neighbour); exact either way,
    and the bounds come back once they pay. ``chunked``: searched in calls of a few rows
    (in place for runs of consecutive rows, gathered otherwise), with the same result."""
    if chunk is not None:
        monkeypatch.setattr(bounded_assign, "SEARCH_CHUNK_ROWS", chunk)
    x = _mixture()
    rng = np.random.default_rng(2)
    c = kernels.kmeans_plus_plus(x, K, rng)
    assigner = bounded_assign.BoundedAssigner(x, "l2")
    assigner.assign(c)
    moved = c + rng.normal(size=c.shape).astype(np.float32) * 2.0  # large moves: the bounds settle nothing
    monkeypatch.setattr(bounded_assign, "CANDIDATE_MIN_VALUES", 1 << 40)  # search every unsure row
    labels, dist = assigner.assign(moved)
    _assert_nearest(x, moved, labels, dist, "l2")
    assert assigner.bound_share < bounded_assign.BOUND_MIN_SHARE
    bounded = np.isfinite(assigner.lower)
    assert 0 < bounded.sum() <= N // bounded_assign.BOUND_PROBE_STRIDE + 1
    labels, dist = assigner.assign(moved)  # unchanged centroids: every bounded row settles
    _assert_nearest(x, moved, labels, dist, "l2")
    assert assigner.bound_share == 1.0 and np.isfinite(assigner.lower).all()
