"""The dedup kernels (numpy only): pairs above a threshold in tiles, the block-group rule,
and the keep rule's two guarantees, against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from curation_spark.curation.dedup import LEFT, PROBE, RIGHT, SAME, group_rows
from curation_spark.method import dedup


def _near_copies(rng, n_base=60, dim=8, copies=4, noise=0.08):
    base = dedup.unit_rows(rng.normal(size=(n_base, dim)))
    x = [base]
    for _ in range(copies):
        x.append(dedup.unit_rows(base + noise * rng.normal(size=base.shape).astype(np.float32)))
    return np.concatenate(x)


@pytest.mark.parametrize("tile", [1, 7, 1000])
def test_pairs_above_is_brute_force_in_any_tiling(tile):
    rng = np.random.default_rng(0)
    x = _near_copies(rng)
    sims = x @ x.T
    want = {(i, j) for i, j in itertools.combinations(range(len(x)), 2) if sims[i, j] >= 0.9}
    i, j, s, compared = dedup.pairs_above(x, None, 0.9, tile=tile)
    assert set(zip(i.tolist(), j.tolist())) == want and compared == len(x) * (len(x) - 1) // 2
    np.testing.assert_allclose(s, sims[i, j], rtol=1e-5)
    left, right = x[:50], x[50:]
    i, j, s, compared = dedup.pairs_above(left, right, 0.9, tile=tile)
    cross = left @ right.T
    assert set(zip(i.tolist(), j.tolist())) == {tuple(p) for p in np.argwhere(cross >= 0.9).tolist()}
    assert compared == 50 * (len(x) - 50)


def test_keep_rule_guarantees_and_chain():
    # a ~ b ~ c with a and c apart: SemDeDup's rule would remove both b and c; the keep
    # rule keeps a and c and removes b (whose twin is a).
    kept, twin, twin_sim = dedup.greedy_keep(np.array([0.0, 1.0, 2.0]), np.array([0, 1]), np.array([1, 2]),
                                             np.array([0.97, 0.96], np.float32))
    assert kept.tolist() == [True, False, True] and twin.tolist() == [-1, 0, -1]
    assert twin_sim[1] == pytest.approx(0.97)


@pytest.mark.parametrize("seed", range(5))
def test_keep_rule_on_random_graphs(seed):
    rng = np.random.default_rng(seed)
    x = _near_copies(rng, n_base=40, copies=5, noise=0.15)
    threshold = 0.9
    priority = rng.random(len(x))
    kept, twin, twin_sim = dedup.dedup_in_memory(x, threshold, priority)
    assert dedup.violations(x, kept, threshold) == 0  # no two kept points within the threshold
    removed = np.nonzero(~kept)[0]
    assert len(removed) > 0 and kept[twin[removed]].all()  # every removed point has a kept twin...
    xs = dedup.unit_rows(x)
    sims = np.einsum("ij,ij->i", xs[removed], xs[twin[removed]])
    assert (sims >= threshold - 1e-6).all()  # ...within the threshold
    # deterministic, and the decided statuses are respected when given
    again = dedup.dedup_in_memory(x, threshold, priority)
    assert (again[0] == kept).all() and (again[1] == twin).all()


def test_decided_points_are_respected():
    # 0 - 1 - 2 path; 1 decided removed beforehand: 0 and 2 are kept around it
    kept, _, _ = dedup.greedy_keep(np.array([0.0, 1.0, 2.0]), np.array([0, 1]), np.array([1, 2]),
                                   np.ones(2, np.float32), decided=np.array([0, -1, 0]))
    assert kept.tolist() == [True, False, True]


@pytest.mark.parametrize("member_blocks, probe_blocks", [([1, 1, 1], [1, 1, 0]), ([3, 1, 2], [2, 0, 3]),
                                                          ([2, 2, 2], [0, 0, 0])])
def test_every_pair_meets_in_exactly_one_group(member_blocks, probe_blocks):
    rng = np.random.default_rng(1)
    n = 120
    mb, qb = np.array(member_blocks), np.array(probe_blocks)
    home = rng.integers(0, 3, n)
    second = (home + rng.integers(1, 3, n)) % 3  # the second-nearest cluster is never the home
    probed = np.bincount(second, minlength=3) > 0
    qb = np.where(probed, np.maximum(qb, 1), 0)  # a probed cluster has at least one probe block
    top = np.stack([home, second], axis=1)
    h = rng.integers(-2 ** 62, 2 ** 62, n)
    row, c, a, b, side = group_rows(top, h, mb, qb)
    groups: dict = {}
    for r, cc, aa, bb, s in zip(row.tolist(), c.tolist(), a.tolist(), b.tolist(), side.tolist()):
        groups.setdefault((cc, aa, bb), []).append((r, s))
    met: dict = {}
    for key, members in groups.items():
        by = {s: [r for r, t in members if t == s] for s in (SAME, LEFT, RIGHT, PROBE)}
        pairs = list(itertools.combinations(by[SAME], 2)) + [(p, q) for p in by[LEFT] for q in by[RIGHT]]
        pairs += [(p, q) for p in by[PROBE] for q in (by[SAME] or by[RIGHT])]
        for p, q in pairs:
            met.setdefault(frozenset((p, q)), []).append(key)
    for p in range(n):
        for q in range(p + 1, n):
            expected = home[p] == home[q] or second[p] == home[q] or second[q] == home[p]
            got = met.get(frozenset((p, q)), [])
            assert (len(got) >= 1) == expected, (p, q, got)
            if home[p] == home[q]:
                assert len(got) == 1, (p, q, got)  # members meet once
