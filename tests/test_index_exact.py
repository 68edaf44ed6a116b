"""The index path's guarantees at small size (fast lane): the batched prior search equals
the per-group one, the neighbour graph is kept across iterations, and what a k-means
*stores* is the exact nearest centroid even when its iterations ran on the index."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curation_spark import synth
from curation_spark.method import candidate_search as search
from curation_spark.method import centroid_index as ci
from curation_spark.method import inprocess, kernels, lloyd
from curation_spark.method import sample_checks as sc


def _mixture(n: int, dim: int, comps: int, seed: int = 0, noise: float = 1.0) -> np.ndarray:
    t = synth.make_gaussian_mixture(n, dim, comps, seed=seed, noise=noise)
    return np.asarray(t.column("embedding").combine_chunks().flatten().to_numpy(), dtype=np.float32).reshape(n, dim)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batched_prior_search_equals_the_per_group_search(distance, threads):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5_000, 12)).astype(np.float32)
    c = rng.normal(size=(700, 12)).astype(np.float32)
    if distance == "cosine":
        x, c = kernels.normalize_rows(x), kernels.normalize_rows(c)
    # Long-tailed group sizes (1 row to > FIXED_CHUNK_ROWS), some clusters without rows.
    start = np.minimum(rng.zipf(1.3, size=len(x)) - 1, 599).astype(np.int64)
    table = rng.integers(0, len(c), size=(len(c), 40)).astype(np.int32)
    c_sq = search.squared_norms(c) if distance == "l2" else None
    for width in (1, 7, 40):
        want = search.search_groups(x, c, c_sq, start, lambda a, w=width: table[a, :w], distance, threads=1)
        got = search.search_fixed(x, c, c_sq, start, np.ascontiguousarray(table[:, :width]), width, distance,
                              threads=threads)
        assert np.array_equal(got, want), width
        # A subset of the rows, searched in place (the wide graph's slices).
        rows = np.flatnonzero(start % 3 == 1)
        got = search.search_fixed(x, c, c_sq, start[rows], np.ascontiguousarray(table[:, :width]), width, distance,
                                  threads=threads, rows=rows)
        assert np.array_equal(got, want[rows]), width


def test_large_groups_are_searched_in_row_chunks_with_the_same_result(monkeypatch):
    """A long-tailed block's largest group is cut into chunks of bounded score memory."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6_000, 12)).astype(np.float32)
    c = rng.normal(size=(300, 12)).astype(np.float32)
    start = np.minimum(rng.zipf(1.2, size=len(x)) - 1, 49).astype(np.int64)  # group 0 holds most rows
    table = rng.integers(0, len(c), size=(50, 60)).astype(np.int64)
    c_sq = search.squared_norms(c)
    want = search.search_groups(x, c, c_sq, start, lambda a: table[a], "l2", k=3)
    monkeypatch.setattr(search, "GROUP_SCORE_BYTES", 64 * 4 * 60 + 1)  # ~64 rows per GEMM
    got = search.search_groups(x, c, c_sq, start, lambda a: table[a], "l2", k=3)
    assert np.array_equal(got, want) and np.bincount(start).max() > 1000


@pytest.mark.parametrize("assignment", ["index", "auto"])
def test_a_kmeans_on_the_index_path_stores_the_exact_nearest_centroid(assignment):
    x = _mixture(12_000, 16, 30)
    params = lloyd.KMeansParams(n_clusters=600, n_iters=4, init="random", seed=3, tol=0.0,
                                assignment=assignment, index_min_clusters=1, index_neighbours=8, index_probes=2)
    keys = {3: np.random.default_rng(3).integers(-2**63, 2**63 - 1, len(x), dtype=np.int64)}
    res = inprocess.fit_in_memory(x, params, keys, "test")
    assert any(h.get("assignment") == "index" for h in res.history)
    want, _ = kernels.assign(x, res.centroids, "l2")
    assert np.array_equal(res.labels, want)
    np.testing.assert_allclose(res.dist, search.exact_distances(x, res.centroids, want), rtol=1e-6)
    assert np.array_equal(res.sizes, np.bincount(want, minlength=600))


def test_a_reassignment_through_the_index_is_exact():
    x = _mixture(6_000, 16, 20)
    c = x[::20][:300].copy()
    labels, dist = ci.assign_fresh(x, c, ci.train_coarse(c, 1), "l2", n_probes=1, n_neighbours=4)
    want, _ = kernels.assign(x, c, "l2")
    assert np.array_equal(labels, want)
    np.testing.assert_allclose(dist, search.exact_distances(x, c, want), rtol=1e-6)


def test_the_prior_path_keeps_its_graph_while_it_is_on_target():
    # 400 tight components for 1,000 centroids: few float32 near-ties between centroids (40
    # components, 25 centroids each, tie ~0.3 % of the points, which a call's sample may
    # count as misses of the kept graph).
    x = _mixture(20_000, 16, 400, noise=0.1)
    c = x[:: len(x) // 1000][:1000].copy()
    assigner = ci.IndexAssigner(x, "l2", n_probes=8, n_neighbours=16)
    assigner.assign(c)  # no previous labels: the probe path
    _, _, stats = assigner.assign(c)  # same centroids: the previous labels are the prior
    assert stats.path == "prior" and assigner.graph is not None
    graph = assigner.graph
    for _ in range(3):  # each call checks a new sample
        _, _, stats = assigner.assign(c)
        assert stats.path == "prior" and assigner.graph is graph  # kept, not rebuilt
    # Widths tried: the configured one doubled up to the cap (here K).
    assert assigner._widths(1000) == [16, 32, 64, 128, 256, 512, 1000]


def test_a_graph_wider_than_its_cap_is_searched_in_slices_with_the_same_labels(monkeypatch):
    """Above ``GRAPH_MAX_BYTES`` the prior path builds and searches the graph one slice of
    centroids at a time and keeps nothing: same labels as the whole graph."""
    x = _mixture(20_000, 16, 40, noise=0.1)
    c = x[:: len(x) // 1000][:1000].copy()
    whole = ci.IndexAssigner(x, "l2", n_probes=8, n_neighbours=16)
    whole.assign(c)
    want, _, stats = whole.assign(c)
    assert stats.path == "prior" and whole.graph is not None
    monkeypatch.setattr(ci, "GRAPH_MAX_BYTES", 4 * stats.n_neighbours * 300)  # 4 slices of <= 300 centroids
    sliced = ci.IndexAssigner(x, "l2", n_probes=8, n_neighbours=16)
    sliced.assign(c)
    got, _, stats = sliced.assign(c)
    assert stats.path == "prior" and sliced.graph is None
    assert np.array_equal(got, want)


def test_the_sample_test_allows_the_binomial_noise_and_widens_where_it_pays():
    """An option is on target when its misses are ``SAMPLE_Z`` standard errors below the
    target's; when none is on the 512-row sample, those it left in reach are decided again,
    cheapest first, on the wider sample; and only where the saving over what would run
    otherwise pays ``WIDE_CHECK_PAYOFF`` times for the check."""
    assert int(sc.allowed_misses(512, 0.99)) == 1  # 512 rows: 99.8 %
    assert int(sc.allowed_misses(1024, 0.99)) == 5  # 1,024 rows (the first check): 99.5 %
    assert int(sc.allowed_misses(16384, 0.99)) == 142  # 16,384 rows: 99.1 %
    x = _mixture(400_000, 8, 10)
    c = x[:500].copy()
    assigner = ci.IndexAssigner(x, "l2", n_probes=4, n_neighbours=8)
    checks = sc.SampleChecks(x, c, "l2", assigner.sample)
    # The wide check is at most 5 % of the block: none in a block of 10,000 rows.
    assert sc.SampleChecks(x[:10_000], c, "l2", sc.agreement_rows(10_000)).wide_rows == sc.AGREEMENT_SAMPLE_ROWS
    assert 5_000 <= sc.SampleChecks(x[:100_000], c, "l2", sc.agreement_rows(100_000)).wide_rows <= 6_024
    small, (medium, wide) = len(checks.small.rows), checks.wider_rows
    assert small < medium < wide == checks.wide_rows
    seen = []

    def option(name, small_misses, wide_share, cost, wide_cost=0.0):
        def evaluate(check):
            seen.append((name, len(check.rows)))
            return len(check.rows) - (small_misses if len(check.rows) == small else int(wide_share * len(check.rows)))
        return ci.PathOption("probe", (name,), cost, wide_cost, evaluate)

    # a: out of reach (40 misses of 1,024); b: in reach, 0.8 % missed on the wider checks (off
    # target on the ~4,100 rows of the next, on target on the widest); c: in reach on the first, out of reach
    # (3 %) on the next. Each tried on the small sample first, then the wider checks in turn,
    # cheapest first, each option while it stays in reach.
    decision = assigner._first_on_target(
        [[option("a", 40, 0.0, 1.0), option("b", 8, 0.008, 3.0)], [option("c", 12, 0.03, 2.0)]],
        checks, math.inf, None)
    assert decision.option.setting == ("b",) and decision.rows == wide
    assert seen == [("a", small), ("b", small), ("c", small), ("c", medium), ("b", medium), ("b", wide)]
    for level in (0, 1):  # a wider check's exact centroids, part reused from the level before
        check = checks.wider(level)
        assert np.array_equal(check.exact, search.nearest(x[check.rows], c)[:, 0])
    # One on target on the small sample with none missed before it: taken at once.
    seen.clear()
    decision = assigner._first_on_target([[option("d", 2, 0.0, 5.0)], [option("a", 40, 0.0, 1.0)]],
                                         checks, math.inf, None)
    assert decision.option.setting == ("d",) and decision.rows == small and seen == [("d", small)]
    # b is cheaper than d (on target on the small sample) but saves less than 3x its next
    # check (a quarter of the widest's 1.0): not checked, d taken. Saving more: checked on
    # each level in turn, and taken.
    for b_cost, checked in ((4.5, False), (1.0, True)):
        seen.clear()
        decision = assigner._first_on_target([[option("b", 8, 0.008, b_cost, wide_cost=1.0)],
                                              [option("d", 2, 0.0, 5.0)]], checks, math.inf, None)
        assert decision.option.setting == (("b",) if checked else ("d",))
        assert seen == [("b", small), ("d", small)] + ([("b", medium), ("b", wide)] if checked else [])
    # None on target anywhere, and exact search (the fallback) so cheap that the saving pays
    # for the next check only (off target there) and not for the widest.
    seen.clear()
    decision = assigner._first_on_target([[option("b", 8, 0.008, 1.0, wide_cost=1.0)]], checks, 2.0, None)
    assert decision.option is None and seen == [("b", small), ("b", medium)]
    seen.clear()
    decision = assigner._first_on_target([[option("b", 8, 0.008, 1.0, wide_cost=1.0)]], checks, 1.5, None)
    assert decision.option is None and seen == [("b", small)]


def test_the_prior_searches_the_rows_farthest_from_their_previous_centroid_exactly():
    """With a rescue share, the prior path's labels are its neighbourhood search's except
    for that share of the rows, the farthest from their previous centroid, which get their
    exact nearest centroid."""
    x = _mixture(20_000, 16, 40)
    c = x[:: len(x) // 1000][:1000].copy()
    assigner = ci.IndexAssigner(x, "l2", n_probes=8, n_neighbours=4)
    assigner.assign(c)
    moved = (c + np.random.default_rng(3).normal(0, 0.3, c.shape)).astype(np.float32)
    lists = ci.CoarseLists.build(moved, assigner.coarse, 8).with_probes(8)
    c_sq = search.squared_norms(moved)
    plain = assigner._search_prior(lists, moved, c_sq, 4, 8, 0.0, None)
    rescued = assigner._search_prior(lists, moved, c_sq, 4, 8, 0.2, None)
    away = search.exact_distances(x, moved, assigner.previous)
    farthest = np.argsort(-away)[: ci.rescued_rows(len(x), 0.2)]
    rest = np.setdiff1d(np.arange(len(x)), farthest)
    exact = search.nearest(x, moved)[:, 0]
    assert np.array_equal(rescued[farthest], exact[farthest])
    assert np.array_equal(rescued[rest], plain[rest])
    assert (plain[farthest] != exact[farthest]).any()  # the share did change something
    assert (rescued == exact).mean() > (plain == exact).mean()
