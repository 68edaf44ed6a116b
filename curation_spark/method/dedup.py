"""Near-duplicate detection kernels: pairs above a cosine threshold, and the keep rule.

numpy only (no Spark): :mod:`curation_spark.curation.dedup` calls these inside each task
on one block pair, and on the small remainder of the keep resolution in the driver.

The keep rule is the greedy maximal independent set in priority order: visit the points
from the highest priority down; a point is kept unless a point kept before it is within
the threshold, in which case it is removed and its *kept twin* is its most similar kept
neighbour. That gives the two guarantees the dedup table promises at once: no two kept
points are within the threshold, and every removed point has a kept point within it. (The
SemDeDup rule, "remove a point if any higher-priority point is within the threshold",
gives the first but not the second: in a chain a ~ b ~ c with a and c apart, c is removed
for b, which is itself removed.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Rows of one side of a block product: the (BLOCK x BLOCK) float32 similarity tile of
#: :func:`pairs_above` is 16 MiB at the default 2048 rows.
TILE_ROWS = 2048


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (zero rows are refused before this is called)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)


def pairs_above(left: np.ndarray, right: np.ndarray | None, threshold: float,
                tile: int = TILE_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """All pairs with inner product ``>= threshold`` between the rows of two unit-norm
    blocks (``right=None``: within ``left``, each unordered pair once, ``i < j``).

    Returns ``(i, j, similarity, pairs_compared)``; the product is computed in tiles of
    ``tile`` rows, so memory stays ``tile x tile`` floats whatever the block sizes.
    """
    same = right is None
    right_rows = left if right is None else right
    out_i, out_j, out_s = [], [], []
    compared = 0
    for lo in range(0, len(left), tile):
        a = left[lo:lo + tile]
        start = lo if same else 0
        for ro in range(start, len(right_rows), tile):
            b = right_rows[ro:ro + tile]
            sims = a @ b.T
            if same and ro == lo:
                # the diagonal tile: only pairs i < j
                mask = np.triu(sims >= threshold, k=1)
                compared += len(a) * (len(a) - 1) // 2
            else:
                mask = sims >= threshold
                compared += len(a) * len(b)
            ii, jj = np.nonzero(mask)
            if len(ii):
                out_i.append(ii + lo)
                out_j.append(jj + ro)
                out_s.append(sims[ii, jj])
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32), compared
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_s).astype(np.float32), compared)


def greedy_keep(priority: np.ndarray, u: np.ndarray, v: np.ndarray, sim: np.ndarray,
                decided: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keep rule on a graph of ``n`` points (edges ``u[e] - v[e]`` of similarity
    ``sim[e]``, indices into ``0..n-1``), visited in ascending ``priority`` (ties: index).

    ``decided``: optional statuses fixed beforehand (1 kept, -1 removed, 0 open), e.g. by
    the distributed rounds; they are respected, and open points are decided around them.

    Returns ``(kept: bool[n], twin: int64[n], twin_sim: float32[n])``: for a removed point
    its most similar kept neighbour (-1 for kept points).
    """
    n = len(priority)
    status = np.zeros(n, dtype=np.int8) if decided is None else decided.astype(np.int8).copy()
    order = np.lexsort((np.arange(n), priority))
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    both = np.concatenate([sim, sim]).astype(np.float32)
    by_src = np.argsort(src, kind="stable")
    src, dst, both = src[by_src], dst[by_src], both[by_src]
    starts = np.searchsorted(src, np.arange(n + 1))
    for p in order.tolist():
        if status[p] != 0:
            continue
        neigh = dst[starts[p]:starts[p + 1]]
        status[p] = -1 if np.any(status[neigh] == 1) else 1
    kept = status == 1
    twin = np.full(n, -1, dtype=np.int64)
    twin_sim = np.zeros(n, dtype=np.float32)
    for p in np.nonzero(~kept)[0].tolist():
        neigh = dst[starts[p]:starts[p + 1]]
        sims = both[starts[p]:starts[p + 1]]
        ok = kept[neigh]
        best = int(np.argmax(np.where(ok, sims, -np.inf)))
        twin[p], twin_sim[p] = int(neigh[best]), float(sims[best])
    return kept, twin, twin_sim


def brute_force_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows of ``x`` (normalised here) at or above the threshold: the
    reference the tests and the benchmark's recall check compare with."""
    i, j, s, _ = pairs_above(unit_rows(x), None, threshold)
    return i, j, s


def violations(x: np.ndarray, kept: np.ndarray, threshold: float) -> int:
    """Pairs of kept rows of ``x`` still at or above the threshold (0 after a full dedup)."""
    i, _, _ = brute_force_pairs(np.asarray(x)[np.asarray(kept, dtype=bool)], threshold)
    return int(len(i))


def dedup_in_memory(x: np.ndarray, threshold: float, priority: Sequence[float] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole dedup of a small block by brute force (tests, the benchmark's check):
    ``(kept, twin, twin_sim)`` as :func:`greedy_keep` returns them."""
    i, j, s = brute_force_pairs(x, threshold)
    pr = np.zeros(len(x)) if priority is None else np.asarray(priority, dtype=np.float64)
    return greedy_keep(pr, i, j, s)
