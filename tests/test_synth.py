"""Tests for curation_spark.synth (synthetic pools with ground-truth labels)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation_spark.method.balance import label_entropy
from curation_spark.synth import (
    RING_CENTERS,
    RING_SIZES,
    SCHEMA,
    iter_gaussian_mixture_batches,
    make_gaussian_mixture,
    make_rings,
)


def _embeddings(table: pa.Table, dim: int) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    return np.asarray(col.flatten()).reshape(-1, dim)


def _check_schema(table: pa.Table) -> None:
    assert table.schema.equals(SCHEMA)
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.schema.field("label").type == pa.int32()


# --------------------------------------------------------------------------
# rings
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rings() -> pa.Table:
    return make_rings(seed=0)


def test_rings_size_schema_and_ids(rings: pa.Table) -> None:
    _check_schema(rings)
    assert rings.num_rows == 29700 == sum(RING_SIZES)
    np.testing.assert_array_equal(rings.column("id").to_numpy(), np.arange(29700))
    lengths = pa.compute.list_value_length(rings.column("embedding")).to_numpy()
    assert np.all(lengths == 2)


def test_rings_label_counts_are_exact(rings: pa.Table) -> None:
    counts = np.bincount(rings.column("label").to_numpy(), minlength=5)
    np.testing.assert_array_equal(counts, [20000, 200, 1000, 500, 8000])


def test_rings_radii_and_angles(rings: pa.Table) -> None:
    xy = _embeddings(rings, 2).astype(np.float64)
    labels = rings.column("label").to_numpy()
    centers = np.asarray(RING_CENTERS)
    d = xy - centers[labels]
    radius = np.hypot(d[:, 0], d[:, 1])
    tol = 1e-5  # float32 rounding of the coordinates
    assert radius.min() >= 0.7 - tol
    assert radius.max() <= 1.0 + tol
    # radius uniform in [0.7, 1.0]: mean 0.85, and it spans the range
    assert abs(radius.mean() - 0.85) < 0.01
    assert radius.min() < 0.71 and radius.max() > 0.99
    # angles cover the whole circle for the big ring
    angle = np.arctan2(d[labels == 0, 1], d[labels == 0, 0])
    hist = np.histogram(angle, bins=8, range=(-np.pi, np.pi))[0]
    assert hist.min() > 0.8 * 20000 / 8


def test_rings_rows_are_shuffled(rings: pa.Table) -> None:
    labels = rings.column("label").to_numpy()
    # the first 1000 ids are not all from ring 0
    assert len(np.unique(labels[:1000])) == 5


def test_rings_deterministic(rings: pa.Table) -> None:
    assert make_rings(seed=0).equals(rings)
    other = make_rings(seed=1)
    assert not other.equals(rings)
    assert other.num_rows == rings.num_rows


def test_rings_custom_arguments() -> None:
    t = make_rings(seed=3, sizes=[3, 5], centers=[(0, 0), (10, 10)], r_min=2.0, r_max=2.0)
    assert t.num_rows == 8
    xy = _embeddings(t, 2).astype(np.float64)
    labels = t.column("label").to_numpy()
    centers = np.array([[0.0, 0.0], [10.0, 10.0]])
    np.testing.assert_allclose(np.linalg.norm(xy - centers[labels], axis=1), 2.0, rtol=1e-6)
    np.testing.assert_array_equal(np.bincount(labels), [3, 5])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sizes": [10, 0, 5, 5, 5]}, "sizes"),
        ({"sizes": [10, -1, 5, 5, 5]}, "sizes"),
        ({"sizes": [10, 2.5, 5, 5, 5]}, "sizes"),
        ({"sizes": []}, "sizes"),
        ({"sizes": [10, 10]}, "len\\(sizes\\)"),
        ({"centers": [(0, 0, 0)] * 5}, "centers"),
        ({"r_min": 1.0, "r_max": 0.5}, "r_min"),
        ({"r_min": -0.1}, "r_min"),
        ({"r_max": float("nan")}, "r_max"),
    ],
)
def test_rings_validation(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_rings(**kwargs)


# --------------------------------------------------------------------------
# gaussian mixture
# --------------------------------------------------------------------------


def test_mixture_schema_shape_and_ids() -> None:
    t = make_gaussian_mixture(n=1000, dim=16, n_components=7, seed=5)
    _check_schema(t)
    assert t.num_rows == 1000
    np.testing.assert_array_equal(t.column("id").to_numpy(), np.arange(1000))
    lengths = pa.compute.list_value_length(t.column("embedding")).to_numpy()
    assert np.all(lengths == 16)
    x = _embeddings(t, 16)
    assert x.dtype == np.float32 and x.shape == (1000, 16)
    labels = t.column("label").to_numpy()
    assert labels.min() >= 0 and labels.max() < 7


def test_mixture_counts_follow_power_law() -> None:
    n, k, alpha = 200_000, 10, 1.0
    t = make_gaussian_mixture(n=n, dim=2, n_components=k, seed=11, alpha=alpha)
    counts = np.bincount(t.column("label").to_numpy(), minlength=k)
    w = np.arange(1, k + 1, dtype=float) ** -alpha
    w /= w.sum()
    assert counts[0] > counts[-1] * 5  # weights ratio is 10
    assert np.all(np.diff(counts) < 0)  # monotone for this n
    sigma = np.sqrt(w * (1 - w) / n)
    assert np.all(np.abs(counts / n - w) < 5 * sigma)


def test_mixture_alpha_zero_is_balanced() -> None:
    t = make_gaussian_mixture(n=50_000, dim=2, n_components=5, seed=2, alpha=0.0)
    labels = t.column("label").to_numpy()
    assert label_entropy(labels, 5) > 0.999


def test_mixture_deterministic_and_seed_dependent() -> None:
    a = make_gaussian_mixture(n=500, dim=8, n_components=4, seed=1)
    b = make_gaussian_mixture(n=500, dim=8, n_components=4, seed=1)
    c = make_gaussian_mixture(n=500, dim=8, n_components=4, seed=2)
    assert a.equals(b)
    assert not np.array_equal(_embeddings(a, 8), _embeddings(c, 8))


def test_mixture_points_cluster_around_their_component() -> None:
    dim = 128
    t = make_gaussian_mixture(n=4000, dim=dim, n_components=50, seed=4)
    x = _embeddings(t, dim).astype(np.float64)
    labels = t.column("label").to_numpy()
    present = np.unique(labels)
    centroids = np.stack([x[labels == k].mean(axis=0) for k in present])
    d2 = (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None]
    assert np.mean(present[d2.argmin(1)] == labels) == 1.0
    # noise std 0.25 per coordinate around the component centre
    resid = x - centroids[np.searchsorted(present, labels)]
    assert abs(resid[labels == 0].std() - 0.25) < 0.01


def test_mixture_zero_noise_gives_component_means() -> None:
    t = make_gaussian_mixture(n=300, dim=4, n_components=3, seed=0, noise=0.0)
    x = _embeddings(t, 4)
    labels = t.column("label").to_numpy()
    for k in np.unique(labels):
        rows = x[labels == k]
        assert np.all(rows == rows[0])
    assert len({tuple(r) for r in x}) == len(np.unique(labels))


def test_batches_equal_table_and_ids_contiguous() -> None:
    n, dim = 2_500, 6
    batches = list(
        iter_gaussian_mixture_batches(n, dim, 5, seed=9, alpha=1.5, batch_size=1_000)
    )
    assert [b.num_rows for b in batches] == [1000, 1000, 500]
    assert all(b.schema.equals(SCHEMA) for b in batches)
    ids = np.concatenate([b.column(0).to_numpy() for b in batches])
    np.testing.assert_array_equal(ids, np.arange(n))
    table = make_gaussian_mixture(n, dim, 5, seed=9, alpha=1.5)
    assert pa.Table.from_batches(batches).equals(table)


def test_batches_from_a_start_row_are_the_suffix_of_the_pool() -> None:
    full = make_gaussian_mixture(70_000, 3, 4, seed=5)
    tail = pa.Table.from_batches(list(iter_gaussian_mixture_batches(70_000, 3, 4, seed=5, batch_size=9_999,
                                                                          start=66_000)))
    assert tail.equals(full.slice(66_000))
    assert list(iter_gaussian_mixture_batches(10, 3, 4, start=10)) == []
    with pytest.raises(ValueError, match="start"):
        iter_gaussian_mixture_batches(10, 3, 4, start=11)


def test_batches_independent_of_batch_size_and_reading() -> None:
    # n crosses the internal 65536-row chunk boundary with unaligned batches
    n, dim, k = 70_000, 3, 4
    ref = make_gaussian_mixture(n, dim, k, seed=21)
    for batch_size in (30_000, 65_535, 100_000):
        got = pa.Table.from_batches(
            list(iter_gaussian_mixture_batches(n, dim, k, seed=21, batch_size=batch_size))
        )
        assert got.equals(ref), batch_size
    # reading only the first batch gives the same rows
    first = next(iter_gaussian_mixture_batches(n, dim, k, seed=21, batch_size=1_000))
    assert pa.Table.from_batches([first]).equals(ref.slice(0, 1_000))
    # a smaller pool is a prefix of a larger one
    small = make_gaussian_mixture(100, dim, k, seed=21)
    assert small.equals(ref.slice(0, 100))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": -5}, "n"),
        ({"n": 1.5}, "n"),
        ({"dim": 0}, "dim"),
        ({"n_components": 0}, "n_components"),
        ({"alpha": -1.0}, "alpha"),
        ({"spread": -1.0}, "spread"),
        ({"noise": float("inf")}, "noise"),
    ],
)
def test_mixture_validation(kwargs: dict, name: str) -> None:
    args = {"n": 10, "dim": 2, "n_components": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        make_gaussian_mixture(**args)
    # the generator validates eagerly, before the first batch is requested
    with pytest.raises(ValueError, match=name):
        iter_gaussian_mixture_batches(**args)


@pytest.mark.parametrize("batch_size", [0, -1, True])
def test_batch_size_validation(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        iter_gaussian_mixture_batches(10, 2, 3, batch_size=batch_size)


def test_batch_size_too_large_for_list_offsets() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        iter_gaussian_mixture_batches(10**8, 128, 3, batch_size=20_000_000)


# --------------------------------------------------------------------------
# label_entropy
# --------------------------------------------------------------------------


def test_entropy_uniform_is_one() -> None:
    assert label_entropy(np.repeat(np.arange(4), 25)) == pytest.approx(1.0)
    assert label_entropy(np.array([3, 1, 2]), n_labels=3) == pytest.approx(1.0)


def test_entropy_single_label_is_zero_when_other_labels_exist() -> None:
    assert label_entropy(np.zeros(10, dtype=int), n_labels=5) == 0.0


def test_entropy_degenerate_n_labels_returns_one() -> None:
    # one possible label: 0/0 normalisation, defined as perfectly balanced
    assert label_entropy(np.zeros(10, dtype=int)) == 1.0
    assert label_entropy(np.array([7]), n_labels=1) == 1.0


def test_entropy_hand_computed() -> None:
    # counts (2, 1, 1): p = (1/2, 1/4, 1/4), H = 1.5 ln 2, normalised by ln 3
    got = label_entropy(np.array([0, 0, 1, 2]))
    assert got == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert got == pytest.approx(0.9463946, abs=1e-7)
    # two equally used labels out of four possible: ln 2 / ln 4 = 0.5
    assert label_entropy(np.array([0, 0, 1, 1]), n_labels=4) == pytest.approx(0.5)


def test_entropy_of_rings_is_low(rings: pa.Table) -> None:
    p = np.array(RING_SIZES) / sum(RING_SIZES)
    expected = -(p * np.log(p)).sum() / np.log(5)
    got = label_entropy(rings.column("label").to_numpy())
    assert got == pytest.approx(expected)
    assert got < 0.6


def test_entropy_validation() -> None:
    with pytest.raises(ValueError, match="labels"):
        label_entropy(np.array([], dtype=int))
    with pytest.raises(ValueError, match="n_labels"):
        label_entropy(np.array([0, 1, 2]), n_labels=2)
    with pytest.raises(ValueError, match="n_labels"):
        label_entropy(np.array([0]), n_labels=0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_entropy_bounded_and_permutation_invariant(values: list[int], rnd) -> None:
    labels = np.array(values)
    h = label_entropy(labels, n_labels=7)
    assert 0.0 <= h <= 1.0
    shuffled = labels.copy()
    rnd.shuffle(shuffled)
    assert label_entropy(shuffled, n_labels=7) == pytest.approx(h)
