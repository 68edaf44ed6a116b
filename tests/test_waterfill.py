"""Tests for curation_spark.method.waterfill: water-filling budget split and leaf copy allocation.

Property-based tests compare against a brute-force oracle on small inputs; a few
example tests pin edge cases, determinism, rough uniformity of the random parts,
and speed on large values.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_spark.method.waterfill import leaf_copies, seeded_rng, water_fill, water_fill_cut

SETTINGS = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------------------- oracle


def oracle_cut(caps: list[int], budget: int) -> int:
    """Largest x with sum(min(x, c)) <= budget, found by stepping x up one at a time.

    When everything fits, every x >= max(caps) is feasible; the module's
    convention is max(caps) (0 for no clusters), so stop there.
    """
    if sum(caps) <= budget:
        return max(caps, default=0)
    x = 0
    while sum(min(x + 1, c) for c in caps) <= budget:
        x += 1
    return x


caps_st = st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=12)


@st.composite
def caps_and_budget(draw):
    caps = draw(caps_st)
    budget = draw(st.integers(min_value=0, max_value=sum(caps) + 20))
    return caps, budget


# --------------------------------------------------------------------------- water_fill properties


@SETTINGS
@given(caps_and_budget())
def test_cut_matches_oracle(cb):
    caps, budget = cb
    assert water_fill_cut(np.array(caps, dtype=np.int64), budget) == oracle_cut(caps, budget)


@SETTINGS
@given(caps_and_budget(), st.integers(min_value=0, max_value=2**32))
def test_water_fill_properties(cb, seed):
    caps, budget = cb
    capa = np.array(caps, dtype=np.int64)
    out = water_fill(capa, budget, np.random.default_rng(seed))
    x = oracle_cut(caps, budget)

    assert out.dtype == np.int64
    assert out.shape == capa.shape
    # exact total
    assert int(out.sum()) == min(budget, sum(caps))
    # never above capacity, never below the cut level
    assert np.all(out <= capa)
    assert np.all(out >= np.minimum(capa, x))
    # clusters below capacity are balanced to within one
    below = out[out < capa]
    if below.size:
        assert int(below.max()) - int(below.min()) <= 1
    # the only units above the cut level go to clusters with cap > x, at most one each
    extra = out - np.minimum(capa, x)
    assert np.all(extra <= 1)
    assert np.all(extra[capa <= x] == 0)
    # input untouched
    assert capa.tolist() == caps


@SETTINGS
@given(caps_and_budget())
def test_water_fill_accepts_lists_and_other_int_dtypes(cb):
    caps, budget = cb
    a = water_fill(caps, budget, np.random.default_rng(0))
    b = water_fill(np.array(caps, dtype=np.int32), np.int64(budget), np.random.default_rng(0))
    c = water_fill(np.array(caps, dtype=np.float64), budget, np.random.default_rng(0))
    assert a.dtype == b.dtype == c.dtype == np.int64
    assert a.tolist() == b.tolist() == c.tolist()


@SETTINGS
@given(
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=30),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=2**32),
)
def test_equal_sizes(n, cap, budget, seed):
    caps = np.full(n, cap, dtype=np.int64)
    out = water_fill(caps, budget, np.random.default_rng(seed))
    if budget >= n * cap:
        assert out.tolist() == caps.tolist()
    else:
        q, r = divmod(budget, n)
        assert sorted(out.tolist()) == [q] * (n - r) + [q + 1] * r


# --------------------------------------------------------------------------- edge cases


def test_empty():
    out = water_fill(np.array([], dtype=np.int64), 10, np.random.default_rng(0))
    assert out.dtype == np.int64 and out.shape == (0,)
    assert water_fill(np.array([], dtype=np.int64), 0, np.random.default_rng(0)).shape == (0,)
    assert water_fill_cut(np.array([], dtype=np.int64), 5) == 0
    assert water_fill([], 3, np.random.default_rng(0)).shape == (0,)


def test_zero_budget():
    caps = np.array([0, 3, 7, 100], dtype=np.int64)
    out = water_fill(caps, 0, np.random.default_rng(1))
    assert out.tolist() == [0, 0, 0, 0]
    assert water_fill_cut(caps, 0) == 0


def test_budget_at_or_above_total_returns_caps():
    caps = np.array([0, 3, 7, 100], dtype=np.int64)
    for budget in (110, 111, 10**12):
        out = water_fill(caps, budget, np.random.default_rng(1))
        assert out.tolist() == caps.tolist()
        assert out is not caps  # a fresh array, safe to mutate


def test_zero_capacity_clusters():
    caps = np.array([0, 0, 5, 0, 5], dtype=np.int64)
    out = water_fill(caps, 7, np.random.default_rng(3))
    assert out.sum() == 7
    assert out[[0, 1, 3]].tolist() == [0, 0, 0]
    assert sorted(out[[2, 4]].tolist()) == [3, 4]
    assert water_fill(np.zeros(4, dtype=np.int64), 5, np.random.default_rng(0)).tolist() == [0] * 4


def test_small_worked_example():
    # x = 4: 1 + 4 + 4 + 4 = 13, remaining 2 go to two of the three clusters with cap > 4
    caps = np.array([1, 10, 10, 5], dtype=np.int64)
    assert water_fill_cut(caps, 15) == 4
    out = water_fill(caps, 15, np.random.default_rng(0))
    assert out[0] == 1 and out.sum() == 15
    assert sorted(out[1:].tolist()) == [4, 5, 5]


def test_validation():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array([1, -1]), 3, rng)
    with pytest.raises(ValueError, match="capacities"):
        water_fill_cut(np.array([1, -1]), 3)
    with pytest.raises(ValueError, match="budget"):
        water_fill(np.array([1, 2]), -1, rng)
    with pytest.raises(ValueError, match="budget"):
        water_fill_cut(np.array([1, 2]), -1)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array([[1, 2]]), 1, rng)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array([1.5, 2.0]), 1, rng)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array([np.nan, 2.0]), 1, rng)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array(["a"]), 1, rng)
    with pytest.raises(ValueError, match="capacities"):
        water_fill(np.array([2**62, 2**62, 2**62], dtype=np.int64), 1, rng)
    with pytest.raises(TypeError, match="budget"):
        water_fill(np.array([1, 2]), 1.5, rng)


# --------------------------------------------------------------------------- large values / speed


def test_large_values_fast():
    rng = np.random.default_rng(123)
    n = 1_000_000
    caps = rng.integers(0, 10**9, size=n, dtype=np.int64)
    budget = 10**12
    t0 = time.perf_counter()
    out = water_fill(caps, budget, seeded_rng(7, 1, 2))
    elapsed = time.perf_counter() - t0
    assert int(out.sum()) == budget
    assert np.all(out <= caps)
    x = water_fill_cut(caps, budget)
    assert int(np.minimum(caps, x).sum()) <= budget < int(np.minimum(caps, x + 1).sum())
    assert elapsed < 3.0

    # few clusters, huge budget relative to capacity, and huge budget below capacity
    caps = np.array([10**9, 5 * 10**8, 3, 0], dtype=np.int64)
    assert water_fill(caps, 10**12, np.random.default_rng(0)).tolist() == caps.tolist()
    out = water_fill(caps, 10**9, np.random.default_rng(0))
    # 3 + 0 taken whole; 10**9 - 3 over two clusters -> cut 499_999_998, one unit left over
    assert water_fill_cut(caps, 10**9) == 499_999_998
    assert out[2:].tolist() == [3, 0]
    assert sorted(out[:2].tolist()) == [499_999_998, 499_999_999]
    assert water_fill_cut(np.array([10**9], dtype=np.int64), 10**9 - 1) == 10**9 - 1


def test_huge_budget_python_int():
    caps = np.array([5, 7], dtype=np.int64)
    assert water_fill(caps, 10**30, np.random.default_rng(0)).tolist() == [5, 7]
    assert water_fill_cut(caps, 10**30) == 7


# --------------------------------------------------------------------------- determinism and randomness


def test_same_seed_same_output():
    caps = np.arange(50, dtype=np.int64) % 13
    a = water_fill(caps, 200, seeded_rng(42, 2, 17))
    b = water_fill(caps, 200, seeded_rng(42, 2, 17))
    assert a.tolist() == b.tolist()


def test_different_seeds_can_differ():
    caps = np.full(20, 10, dtype=np.int64)  # budget 105 -> cut 5, remainder 5 among 20 clusters
    outs = {tuple(water_fill(caps, 105, seeded_rng(s)).tolist()) for s in range(20)}
    assert len(outs) > 1
    for o in outs:
        assert sum(o) == 105


def test_order_independent_per_group_draws():
    groups = {g: np.random.default_rng(g).integers(0, 30, size=8) for g in range(10)}
    budgets = {g: int(groups[g].sum()) // 2 for g in groups}
    fwd = {g: water_fill(groups[g], budgets[g], seeded_rng(9, 1, g)).tolist() for g in groups}
    rev = {g: water_fill(groups[g], budgets[g], seeded_rng(9, 1, g)).tolist() for g in reversed(list(groups))}
    assert fwd == rev


def test_seeded_rng_keys_are_unambiguous():
    def first(*args):
        return seeded_rng(*args).integers(0, 2**63, size=4).tolist()

    assert first(1, 2, 3) == first(1, 2, 3)
    distinct = [(1,), (1, 0), (1, 0, 0), (2,), (1, 2), (2, 1), (1, -1), (1, 2**32), (1, 0, 1)]
    results = [tuple(first(*k)) for k in distinct]
    assert len(set(results)) == len(results)
    with pytest.raises(ValueError, match="keys"):
        seeded_rng(1, 2**63)
    with pytest.raises(ValueError, match="seed"):
        seeded_rng(2**64)


def test_remainder_roughly_uniform_single():
    # cut x = 5, remainder 1 among the three clusters with cap > 5 (indices 1, 2, 3)
    caps = np.array([5, 10, 10, 10, 3, 0], dtype=np.int64)
    assert water_fill_cut(caps, 24) == 5
    trials = 3000
    counts = np.zeros(caps.size, dtype=np.int64)
    for s in range(trials):
        out = water_fill(caps, 24, seeded_rng(s, 1))
        counts += out - np.minimum(caps, 5)
    assert counts[[0, 4, 5]].tolist() == [0, 0, 0]
    assert counts.sum() == trials
    expected = trials / 3
    for i in (1, 2, 3):
        assert 0.85 * expected < counts[i] < 1.15 * expected, counts


def test_remainder_roughly_uniform_pairs():
    # cut x = 2, remainder 2 among four eligible clusters: every pair about equally likely
    caps = np.array([9, 1, 9, 9, 9], dtype=np.int64)
    assert water_fill_cut(caps, 11) == 2
    trials = 3000
    pairs: Counter = Counter()
    for s in range(trials):
        out = water_fill(caps, 11, seeded_rng(s, 2))
        extra = np.flatnonzero(out - np.minimum(caps, 2))
        pairs[tuple(extra.tolist())] += 1
    assert set(pairs) == set(itertools.combinations([0, 2, 3, 4], 2))
    expected = trials / 6
    for p, c in pairs.items():
        assert 0.8 * expected < c < 1.2 * expected, pairs


# --------------------------------------------------------------------------- leaf_copies


@st.composite
def leaf_case(draw):
    size = draw(st.integers(min_value=0, max_value=30))
    multiplier = draw(st.integers(min_value=0, max_value=5))
    target = draw(st.integers(min_value=0, max_value=size * multiplier + 10))
    distances = draw(
        st.lists(
            st.floats(min_value=0, max_value=10, allow_nan=False).map(lambda v: round(v, 1)),
            min_size=size,
            max_size=size,
        )
    )
    return size, target, multiplier, np.array(distances, dtype=np.float64)


@SETTINGS
@given(leaf_case(), st.sampled_from(["r", "c"]), st.integers(min_value=0, max_value=2**32))
def test_leaf_copies_properties(case, strategy, seed):
    size, target, multiplier, distances = case
    out = leaf_copies(size, target, multiplier, distances, strategy, np.random.default_rng(seed))
    assert out.dtype == np.int64 and out.shape == (size,)
    assert int(out.sum()) == min(target, size * multiplier)
    assert np.all(out >= 0) and np.all(out <= multiplier)
    if size * multiplier <= target:
        assert np.all(out == multiplier)
        return
    base, extra = divmod(target, size)
    assert np.all((out == base) | (out == base + 1))
    got_extra = np.flatnonzero(out == base + 1)
    assert got_extra.size == extra  # distinct points, one extra each
    if strategy == "c":
        expected = np.lexsort((np.arange(size), distances))[:extra]
        assert sorted(got_extra.tolist()) == sorted(expected.tolist())
        # every point with an extra copy is at least as close as every point without
        if 0 < extra < size:
            assert distances[out == base + 1].max() <= distances[out == base].min()


def test_leaf_copies_c_ties_by_index():
    d = np.array([1.0, 0.5, 0.5, 0.5, 2.0])
    out = leaf_copies(5, 7, 2, d, "c", None)
    assert out.tolist() == [1, 2, 2, 1, 1]


def test_leaf_copies_c_is_deterministic_without_rng():
    d = np.array([3.0, 1.0, 2.0])
    assert leaf_copies(3, 4, 3, d, "c", None).tolist() == [1, 2, 1]
    assert leaf_copies(3, 4, 3, d, "c", np.random.default_rng(5)).tolist() == [1, 2, 1]


def test_leaf_copies_r_determinism_and_variety():
    a = leaf_copies(20, 25, 3, None, "r", seeded_rng(1, 0, 4))
    b = leaf_copies(20, 25, 3, None, "r", seeded_rng(1, 0, 4))
    assert a.tolist() == b.tolist()
    outs = {tuple(leaf_copies(20, 25, 3, None, "r", seeded_rng(s)).tolist()) for s in range(10)}
    assert len(outs) > 1


def test_leaf_copies_r_roughly_uniform():
    trials = 2000
    counts = np.zeros(6, dtype=np.int64)
    for s in range(trials):
        counts += leaf_copies(6, 2, 1, None, "r", seeded_rng(s, 3)) == 1
    expected = trials * 2 / 6
    assert np.all((counts > 0.85 * expected) & (counts < 1.15 * expected)), counts


def test_leaf_copies_edge_cases():
    rng = np.random.default_rng(0)
    assert leaf_copies(0, 0, 1, None, "r", rng).shape == (0,)
    assert leaf_copies(0, 5, 3, np.array([]), "c", None).shape == (0,)
    assert leaf_copies(4, 0, 2, None, "r", rng).tolist() == [0, 0, 0, 0]
    assert leaf_copies(4, 100, 2, None, "r", rng).tolist() == [2, 2, 2, 2]
    assert leaf_copies(4, 8, 2, None, "r", rng).tolist() == [2, 2, 2, 2]
    assert leaf_copies(4, 4, 2, None, "r", rng).tolist() == [1, 1, 1, 1]
    assert leaf_copies(3, 5, 0, None, "r", rng).tolist() == [0, 0, 0]


def test_leaf_copies_validation():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="strategy"):
        leaf_copies(3, 2, 1, None, "x", rng)
    with pytest.raises(ValueError, match="size"):
        leaf_copies(-1, 2, 1, None, "r", rng)
    with pytest.raises(ValueError, match="target"):
        leaf_copies(3, -2, 1, None, "r", rng)
    with pytest.raises(ValueError, match="multiplier"):
        leaf_copies(3, 2, -1, None, "r", rng)
    with pytest.raises(ValueError, match="distances"):
        leaf_copies(3, 2, 1, None, "c", rng)
    with pytest.raises(ValueError, match="distances"):
        leaf_copies(3, 2, 1, np.array([1.0, 2.0]), "c", rng)
    with pytest.raises(ValueError, match="distances"):
        leaf_copies(3, 2, 1, np.array([1.0, np.nan, 2.0]), "c", rng)
    with pytest.raises(ValueError, match="rng"):
        leaf_copies(3, 2, 1, None, "r", None)
