"""The numeric half of the reduce-scatter: owner ranges, payloads, bit-exact rank-ordered sums."""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark.method.reduce import owner_bounds, reduce_owned, split_by_owner


def sparse_partials(rank: int, n_clusters: int, dim: int, touched: int | None = None):
    """One rank's sparse partials with values over ~24 orders of magnitude, so the float64
    result depends on summation order."""
    rng = np.random.default_rng([rank, n_clusters, dim])
    m = rng.integers(0, n_clusters + 1) if touched is None else touched
    idx = np.sort(rng.choice(n_clusters, m, replace=False)).astype(np.int32)
    counts = rng.integers(1, 1000, m).astype(np.int64)
    sums = rng.standard_normal((m, dim)) * 10.0 ** rng.integers(-12, 12, (m, dim))
    return idx, counts, sums


def dense_sum(partials, n_clusters: int, dim: int):
    """The reference: dense partial-sum arrays added in rank order, starting from zeros."""
    total = np.zeros((n_clusters, dim))
    total_counts = np.zeros(n_clusters, dtype=np.int64)
    for idx, counts, sums in partials:
        dense = np.zeros((n_clusters, dim))
        dense_counts = np.zeros(n_clusters, dtype=np.int64)
        dense[idx] = sums
        dense_counts[idx] = counts
        total = total + dense
        total_counts = total_counts + dense_counts
    return total, total_counts


def reduce_all(partials, n_clusters: int, dim: int, n_owners: int):
    """Split every rank's partials by owner, reduce each owner's range, concatenate."""
    bounds = owner_bounds(n_clusters, n_owners)
    payloads = [split_by_owner(idx, counts, sums, bounds) for idx, counts, sums in partials]
    parts = [reduce_owned([p[owner] for p in payloads], int(bounds[owner]), int(bounds[owner + 1]), dim)
             for owner in range(n_owners)]
    return np.concatenate([s for s, _ in parts]), np.concatenate([c for _, c in parts])


@pytest.mark.parametrize(("k", "t"), [(2, 5), (5, 5), (10, 3), (100, 7), (0, 3), (7, 1)])
def test_owner_bounds_cover_all_clusters_as_evenly_as_possible(k, t):
    b = owner_bounds(k, t)
    sizes = np.diff(b)
    assert len(b) == t + 1 and b[0] == 0 and b[-1] == k
    assert (sizes >= 0).all() and sizes.max() - sizes.min() <= 1


def test_owner_bounds_examples_and_errors():
    assert owner_bounds(2, 5).tolist() == [0, 0, 0, 1, 1, 2]
    assert owner_bounds(3, 3).tolist() == [0, 1, 2, 3]
    assert owner_bounds(10, 3).tolist() == [0, 3, 6, 10]
    with pytest.raises(ValueError):
        owner_bounds(10, 0)


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 7])
@pytest.mark.parametrize("n_owners", [1, 3, 4])
def test_owner_reduction_is_bit_identical_to_rank_ordered_dense_sum(n_ranks, n_owners):
    k, dim = 61, 6
    partials = [sparse_partials(r, k, dim) for r in range(n_ranks)]
    sums, counts = reduce_all(partials, k, dim, n_owners)
    ref_sums, ref_counts = dense_sum(partials, k, dim)
    assert sums.dtype == np.float64 and counts.dtype == np.int64
    assert np.array_equal(sums, ref_sums)
    assert np.array_equal(counts, ref_counts)


def test_data_is_order_sensitive():
    """Guards the test above: with this data, another summation order gives other bits."""
    k, dim = 61, 6
    partials = [sparse_partials(r, k, dim, touched=k) for r in range(7)]
    forward, _ = dense_sum(partials, k, dim)
    backward, _ = dense_sum(partials[::-1], k, dim)
    assert not np.array_equal(forward, backward)
    assert np.array_equal(reduce_all(partials, k, dim, 3)[0], forward)


def test_empty_partials_and_empty_ranges():
    k, dim = 4, 3
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, dim)))
    bounds = owner_bounds(k, 6)  # K < T: some owners have an empty range
    payloads = split_by_owner(*empty, bounds)
    assert len(payloads) == 6 and all(len(p) == 16 for p in payloads)
    sums, counts = reduce_owned(payloads[:2], 0, 0, dim)
    assert sums.shape == (0, dim) and counts.shape == (0,)
    partials = [empty, sparse_partials(1, k, dim, touched=2), empty]
    got_sums, got_counts = reduce_all(partials, k, dim, 6)
    ref_sums, ref_counts = dense_sum(partials, k, dim)
    assert np.array_equal(got_sums, ref_sums) and np.array_equal(got_counts, ref_counts)
    assert np.array_equal(reduce_all([empty, empty], k, dim, 2)[0], np.zeros((k, dim)))


def test_dim_one():
    partials = [sparse_partials(r, 20, 1) for r in range(3)]
    sums, counts = reduce_all(partials, 20, 1, 2)
    ref_sums, ref_counts = dense_sum(partials, 20, 1)
    assert sums.shape == (20, 1)
    assert np.array_equal(sums, ref_sums) and np.array_equal(counts, ref_counts)


def test_payload_is_compact():
    idx, counts, sums = sparse_partials(0, 50, 9, touched=30)
    bounds = owner_bounds(50, 4)
    payloads = split_by_owner(idx, counts, sums, bounds)
    per_owner = np.diff(np.searchsorted(idx, bounds))
    assert [len(p) for p in payloads] == [16 + m * (8 * 9 + 12) for m in per_owner]


def test_bad_input_is_rejected():
    bounds = owner_bounds(10, 2)
    with pytest.raises(ValueError, match="sorted"):
        split_by_owner(np.array([3, 1], np.int32), np.ones(2, np.int64), np.zeros((2, 2)), bounds)
    with pytest.raises(ValueError, match="sorted"):
        split_by_owner(np.array([1, 10], np.int32), np.ones(2, np.int64), np.zeros((2, 2)), bounds)
    payload = split_by_owner(np.array([1, 7], np.int32), np.ones(2, np.int64), np.zeros((2, 2)),
                             owner_bounds(10, 1))[0]
    with pytest.raises(ValueError, match="not for"):
        reduce_owned([payload], 0, 5, 2)
