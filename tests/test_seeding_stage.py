"""The two-level init spread over a barrier stage's tasks (curation_spark.engine.seeding_stage):
tasks are threads on real loopback sockets (the mesh of test_exchange); the result must be
the in-process two-level init of the same sample, bit for bit."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation_spark.method import inprocess, seeding
from curation_spark.method import lloyd
from curation_spark import synth
from curation_spark.engine.seeding_stage import owners_by_work, sample_rows, two_level_init_in_stage
from test_exchange import ok, run_tasks


def _data(n=4000, dim=8, components=15, seed=2):
    table = synth.make_gaussian_mixture(n, dim, components, seed=seed)
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)


def _blocks(ids: np.ndarray, n_tasks: int, seed: int = 0):
    """Rows dealt to tasks at random, each block in ascending id order (as blocks load)."""
    owner = np.random.default_rng(seed).integers(0, n_tasks, size=len(ids))
    return [np.flatnonzero(owner == r)[np.argsort(ids[owner == r], kind="stable")] for r in range(n_tasks)]


def _reference_sample(ids, keys, n_rows, n_total, cut):
    """The n_rows smallest keys under the cut, ties by id, in id order."""
    if n_rows >= n_total:
        return np.argsort(ids, kind="stable")
    below = np.flatnonzero(keys <= cut)
    chosen = below[np.lexsort((ids[below], keys[below]))[:n_rows]]
    return chosen[np.argsort(ids[chosen], kind="stable")]


@pytest.mark.parametrize("n_tasks,distance,allocation,n_rows,string_ids", [
    (3, "l2", "gain", 2500, False), (2, "cosine", "size", 4000, True), (1, "l2", "gain", 3000, False)])
def test_stage_init_equals_in_process_init(n_tasks, distance, allocation, n_rows, string_ids):
    x = _data()
    n, k, seed = len(x), 70, 5
    order_ids = np.random.default_rng(1).permutation(n).astype(np.int64)
    ids = np.array([f"p{v:05d}" for v in order_ids]) if string_ids else order_ids
    keys = np.random.default_rng(3).integers(-2 ** 63, 2 ** 63 - 1, size=n, dtype=np.int64)
    cut = lloyd.init_sample_cut(n_rows, n)
    blocks = _blocks(ids, n_tasks)

    def body(group):
        rows = blocks[group.rank]
        return two_level_init_in_stage(group, pa.array(ids[rows]), x[rows], keys[rows], k, seed, distance, n_rows, n,
                                       cut, allocation=allocation)

    results = ok(run_tasks(n_tasks, body, timeout=60))
    ref = seeding.two_level_init(x[_reference_sample(ids, keys, n_rows, n, cut)], k, seed, distance,
                                 allocation=allocation)
    assert ref.shape == (k, 8)
    for got in results:
        np.testing.assert_array_equal(got, ref)


def test_sample_rows_resolves_hash_collisions_by_id():
    n, n_rows, n_tasks = 600, 100, 3
    ids = np.random.default_rng(0).permutation(n).astype(np.int64) * 7
    keys = np.random.default_rng(1).integers(-2 ** 63, 2 ** 63 - 1, size=n, dtype=np.int64)
    cut = lloyd.init_sample_cut(n_rows, n)
    threshold = np.sort(keys)[n_rows - 1]
    assert threshold <= cut
    tied = np.random.default_rng(2).choice(np.flatnonzero(keys > threshold), size=9, replace=False)
    keys[tied] = threshold  # ten rows share the threshold key; only one of them fits
    blocks = _blocks(ids, n_tasks, seed=4)

    def body(group):
        rows = blocks[group.rank]
        return ids[rows][sample_rows(group, pa.array(ids[rows]), keys[rows], n_rows, n, cut)]

    got = np.sort(np.concatenate(ok(run_tasks(n_tasks, body))))
    want = np.sort(ids[_reference_sample(ids, keys, n_rows, n, cut)])
    assert len(got) == n_rows
    np.testing.assert_array_equal(got, want)
    by_id = np.argsort(ids)  # the in-process rule on one id-ordered block picks the same rows
    np.testing.assert_array_equal(np.sort(ids[by_id][inprocess.init_sample_rows(n_rows, n, keys[by_id])]), want)


def test_owners_balance_the_work():
    sizes = np.array([100, 5, 5, 5, 5, 90, 0, 10])
    plan = seeding.fine_plan(sizes, 40)
    owner = owners_by_work(sizes, plan, 2)
    assert set(owner.tolist()) <= {0, 1}
    assert owner[0] != owner[5]  # the two big clusters go to different tasks
    np.testing.assert_array_equal(owner, owners_by_work(sizes, plan, 2))
