"""Numeric kernels of k-means: plain numpy/faiss on in-memory blocks, no Spark.

The Spark layer (:mod:`curation_spark.engine.kmeans`) calls these on each partition's block;
tests call them with small arrays and compare against brute force.

Conventions: points and centroids are C-contiguous float32 ``(n, d)`` arrays; for the
``cosine`` distance both are L2-normalised first, the search is by inner product, and the
reported distance is ``1 - cos``. For ``l2`` the reported distance is Euclidean (the
objective sums its square).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation_spark.method.row_threads import balanced_cuts, faiss_threads, run_slices, threads_for_work
from curation_spark.method.seeds import seeded_rng

#: Rows per chunk (x 4) when accumulating partial sums: each chunk's columns are copied
#: once (column-major), so this bounds the scratch space (128 MiB at D = 128).
SUM_CHUNK_ROWS = 65536


def set_threads(n_threads: int) -> None:
    """Give faiss exactly the task's cores, so tasks do not oversubscribe the machine."""
    import faiss

    faiss.omp_set_num_threads(max(1, int(n_threads)))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length rows (zero rows stay zero), float32, for cosine distance."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def assign(points: np.ndarray, centroids: np.ndarray, distance: str = "l2") -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every point, with faiss's exact (flat) search.

    Parameters
    ----------
    points : (n, d) float32
    centroids : (k, d) float32
    distance : ``l2`` or ``cosine`` (both arrays must already be normalised for cosine)

    Returns
    -------
    labels : (n,) int64, index of the nearest centroid (lowest index on ties)
    dist : (n,) float32, Euclidean distance (``l2``) or ``1 - cos`` (``cosine``)
    """
    import faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    n, d = points.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if distance == "l2":
        index: faiss.IndexFlat = faiss.IndexFlatL2(d)
    elif distance == "cosine":
        index = faiss.IndexFlatIP(d)
    else:
        raise ValueError(f"distance: unknown value {distance!r} (choose l2 or cosine)")
    index.add(centroids)
    scores, labels = index.search(points, 1)
    labels = labels[:, 0].astype(np.int64)
    if distance == "l2":
        dist = np.sqrt(np.maximum(scores[:, 0], 0.0)).astype(np.float32)
    else:
        dist = np.maximum(1.0 - scores[:, 0], 0.0).astype(np.float32)
    return labels, dist


def objective_terms(dist: np.ndarray, distance: str = "l2") -> float:
    """This block's share of the k-means objective (sum of squared distances; for cosine,
    sum of ``1 - cos``), in float64."""
    d = dist.astype(np.float64)
    return float(np.dot(d, d)) if distance == "l2" else float(d.sum())


def partial_sums(points: np.ndarray, labels: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster float64 sums of points and counts, for one block.

    One ``np.bincount(labels, weights=column)`` per dimension over column-major chunks:
    measured 5x faster than sorting + ``np.add.reduceat`` and ~50x faster than
    ``np.add.at`` at 500k x 128, K = 1000; sums are float64 and deterministic for a given
    row order (the columns are split over faiss's threads, each summed as one thread would).

    Returns
    -------
    sums : (k, d) float64
    counts : (k,) int64
    """
    n, d = points.shape
    sums = np.zeros((n_clusters, d), dtype=np.float64)
    counts = np.bincount(labels, minlength=n_clusters).astype(np.int64) if n else np.zeros(n_clusters, np.int64)
    add_column_sums(sums, points, labels)
    return sums, counts


def add_column_sums(out: np.ndarray, points: np.ndarray, labels: np.ndarray, sign: float = 1.0) -> None:
    """``out[c] += sign * (sum of the rows labelled c)``, column by column (``np.bincount``
    releases the GIL: the columns are split over the threads faiss has; measured 0.12 s ->
    0.08 s at 500k x 64, K = 500, two threads)."""
    n, d = points.shape
    k = len(out)
    threads = threads_for_work(n * d, faiss_threads())

    def columns(lo: int, hi: int) -> None:
        for start in range(0, n, SUM_CHUNK_ROWS * 4):
            lab = labels[start:start + SUM_CHUNK_ROWS * 4]
            cols = np.asfortranarray(points[start:start + SUM_CHUNK_ROWS * 4, lo:hi])
            for j in range(hi - lo):
                column = np.bincount(lab, weights=cols[:, j], minlength=k)
                if sign < 0:
                    out[:, lo + j] -= column
                else:
                    out[:, lo + j] += column

    run_slices(columns, balanced_cuts([1.0] * d, threads), threads)


def update_centroids(sums: np.ndarray, counts: np.ndarray, previous: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Next centroids from summed partial sums.

    Empty clusters keep their previous centroid (deterministic, and a later iteration or
    resampling step may refill them). For cosine the means are re-normalised (spherical
    k-means).
    """
    new = previous.astype(np.float64, copy=True)
    nonempty = counts > 0
    new[nonempty] = sums[nonempty] / counts[nonempty, None]
    new32 = np.ascontiguousarray(new, dtype=np.float32)
    if distance == "cosine":
        new32[nonempty] = normalize_rows(new32[nonempty])
    return new32


def centroid_shift(old: np.ndarray, new: np.ndarray) -> float:
    """Largest Euclidean movement of any centroid (the tolerance criterion)."""
    if len(old) == 0:
        return 0.0
    diff = new.astype(np.float64) - old.astype(np.float64)
    return float(np.sqrt((diff * diff).sum(axis=1).max()))


def _sq_dists(points64: np.ndarray, points_sq: np.ndarray, candidates: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """Squared distances between float64 points ``(n, d)`` and a few candidate centres
    ``(m, d)``, via GEMM, as an ``(m, n)`` array (one contiguous row per candidate).

    No copy of the points is made; ``out`` (``(m, n)`` float64) is filled in place when
    given. The values are those of ``|x|^2 - 2 x.c + |c|^2`` with the GEMM computed as
    ``points64 @ (-2 candidates).T`` (written through the transposed view of ``out``, which
    numpy hands to BLAS as the same product), then clipped at 0.
    """
    cand = np.asarray(candidates, dtype=np.float64)
    if out is None:
        out = np.empty((len(cand), len(points64)), dtype=np.float64)
    np.matmul(points64, (-2.0 * cand).T, out=out.T)  # = -2 (x.c) exactly: scaling by -2 is exact
    out += points_sq[None, :]
    out += (cand * cand).sum(axis=1)[:, None]
    return np.maximum(out, 0.0, out=out)


def kmeans_plus_plus(points: np.ndarray, n_clusters: int, rng: np.random.Generator,
                     n_local_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding on an in-memory sample.

    Each new centre is the best of ``2 + floor(ln k)`` candidates drawn with probability
    proportional to the squared distance to the closest centre so far (best = smallest
    resulting potential). Cost O(k * trials * n * d); callers bound n.

    The sample is converted to float64 once; every step works in preallocated buffers laid
    out one candidate per contiguous row (so the broadcasts, the element-wise minimum and
    the per-candidate potentials run along contiguous memory: ~3x faster than an
    ``(n, trials)`` layout at d = 2). Deterministic for a given generator state.

    Returns
    -------
    (k, d) float32 centres, rows taken from ``points``.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    n, d = points.shape
    if n_clusters < 1 or n_clusters > n:
        raise ValueError(f"n_clusters must be in [1, {n}], got {n_clusters}")
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    x64 = points.astype(np.float64)
    points_sq = (x64 * x64).sum(axis=1)
    centers = np.empty((n_clusters, d), dtype=np.float32)
    first = int(rng.integers(n))
    centers[0] = points[first]
    closest = _sq_dists(x64, points_sq, x64[first:first + 1])[0]
    potential = closest.sum()
    cand_d2 = np.empty((n_local_trials, n), dtype=np.float64)
    cumulative = np.empty(n, dtype=np.float64)
    for c in range(1, n_clusters):
        if potential <= 0:  # every point already coincides with a centre: pick unused rows
            candidates = rng.integers(n, size=n_local_trials)
        else:
            np.cumsum(closest, out=cumulative)
            draws = rng.random(n_local_trials) * cumulative[-1]
            candidates = np.minimum(np.searchsorted(cumulative, draws, side="right"), n - 1)
        _sq_dists(x64, points_sq, x64[candidates], out=cand_d2)
        np.minimum(cand_d2, closest[None, :], out=cand_d2)  # new closest, per candidate
        potentials = cand_d2.sum(axis=1)
        best = int(np.argmin(potentials))
        centers[c] = points[candidates[best]]
        closest[:] = cand_d2[best]
        potential = potentials[best]
    return centers


def random_init(points: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """``n_clusters`` distinct rows of the sample, uniformly at random."""
    n = len(points)
    if n_clusters < 1 or n_clusters > n:
        raise ValueError(f"n_clusters must be in [1, {n}], got {n_clusters}")
    idx = rng.choice(n, size=n_clusters, replace=False)
    return np.ascontiguousarray(points[np.sort(idx)], dtype=np.float32)


@dataclass
class LloydResult:
    centroids: np.ndarray
    labels: np.ndarray
    dist: np.ndarray
    objective: float
    n_iters: int


def lloyd(points: np.ndarray, centroids: np.ndarray, n_iters: int, distance: str = "l2",
          tol: float = 0.0) -> LloydResult:
    """Single-block Lloyd iterations with the same kernels and rules as the distributed engine.

    Used for small problems that fit one task (per-cluster splits) and as the reference the
    distributed engine is tested against. The returned objective is the one of the returned
    assignment (computed after the last update).
    """
    x = normalize_rows(points) if distance == "cosine" else np.ascontiguousarray(points, dtype=np.float32)
    c = normalize_rows(centroids) if distance == "cosine" else np.ascontiguousarray(centroids, dtype=np.float32)
    k = len(c)
    done = 0
    for _ in range(n_iters):
        labels, _ = assign(x, c, distance)
        sums, counts = partial_sums(x, labels, k)
        new = update_centroids(sums, counts, c, distance)
        shift = centroid_shift(c, new)
        c = new
        done += 1
        if shift == 0.0 or (tol > 0 and shift <= tol):
            break
    labels, dist = assign(x, c, distance)
    return LloydResult(c, labels, dist, objective_terms(dist, distance), done)


def split_cluster(points: np.ndarray, n_splits: int, n_iters: int, seed: int,
                  distance: str = "l2") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split one cluster's points into at most ``n_splits`` non-empty sub-clusters.

    A small k-means (k-means++ init, ``n_iters`` Lloyd iterations) on the cluster alone;
    empty sub-clusters are dropped and the rest renumbered ``0..m-1`` in order of first
    appearance of their centroid index, so ids are dense.

    Returns
    -------
    labels : (n,) int64 dense sub-cluster ids
    dist : (n,) float32 distance to the sub-cluster centroid
    centroids : (m, d) float32
    """
    x = normalize_rows(points) if distance == "cosine" else np.ascontiguousarray(points, dtype=np.float32)
    n = len(x)
    k = min(n_splits, n)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, x.shape[1]), np.float32)
    if k <= 1:
        c = x.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
        if distance == "cosine":
            c = normalize_rows(c)
        _, dist = assign(x, c, distance)
        return np.zeros(n, dtype=np.int64), dist, c
    rng = seeded_rng(seed, n)
    init = kmeans_plus_plus(x, k, rng)
    res = lloyd(x, init, n_iters, distance)
    used = np.unique(res.labels)
    remap = np.full(k, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return remap[res.labels], res.dist, res.centroids[used]


def size_stats(sizes: np.ndarray) -> dict[str, float]:
    """Cluster-size summary: min/median/max, the Gini coefficient (0 = all equal) and the
    share of all points in the largest cluster (what flags a degenerate level)."""
    s = np.sort(np.asarray(sizes, dtype=np.float64))
    n = len(s)
    if n == 0:
        return {"n_clusters": 0, "min": 0, "median": 0, "max": 0, "gini": 0.0, "largest_share": 0.0}
    total = s.sum()
    gini = 0.0 if total == 0 else float((2 * np.arange(1, n + 1) - n - 1).dot(s) / (n * total))
    return {"n_clusters": int(n), "min": int(s[0]), "median": float(np.median(s)), "max": int(s[-1]), "gini": gini,
            "largest_share": 0.0 if total == 0 else float(s[-1] / total)}


def size_histogram(sizes: np.ndarray) -> dict[str, list[int]]:
    """Cluster sizes counted in power-of-two bins [1,2), [2,4), ... (plus a bin for 0).

    Small enough to keep in run.json for any K, and enough to plot a size distribution on
    a log scale (e.g. before vs after resampling).
    """
    s = np.asarray(sizes, dtype=np.int64)
    top = int(s.max()) if len(s) else 1
    n_bins = max(1, int(np.ceil(np.log2(top + 1))) + 1)
    edges = [0] + [2 ** i for i in range(n_bins)]
    counts = np.histogram(s, bins=edges + [2 ** n_bins])[0]
    return {"edges": edges + [2 ** n_bins], "counts": counts.astype(int).tolist()}


#: A block keeps dense per-cluster sums across iterations while they take at most this many bytes.
DENSE_SUMS_MAX_BYTES = 64 * 1024 * 1024


def runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by equal key: (order, keys[order], starts, ends), the stable sort of the
    keys and the [start, end) of each run of equal keys in it (ascending keys, row order
    kept inside a run: the grouping every per-cluster GEMM and sum here relies on)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return order, sorted_keys, np.concatenate(([0], cuts)).astype(np.int64), \
        np.concatenate((cuts, [len(keys)])).astype(np.int64)


def sparse_partial_sums(points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cluster float64 sums of one block for the clusters it touches only (memory
    O(n x D) whatever K is): rows are grouped by a stable sort on the label and summed
    cluster by cluster in row order.

    Returns
    -------
    idx : (m,) int32 sorted cluster ids; counts : (m,) int64; sums : (m, d) float64
    """
    n, d = points.shape
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, d), np.float64)
    order, sorted_labels, starts, ends = runs(labels)
    counts = (ends - starts).astype(np.int64)
    sums = np.add.reduceat(points[order].astype(np.float64), starts, axis=0)
    return sorted_labels[starts].astype(np.int32), counts, sums


class BlockSums:
    """The per-cluster partial sums of one block across Lloyd iterations.

    Small K x D: dense float64 sums are kept and, from the second iteration on, only the
    rows whose label changed are subtracted from their old cluster and added to the new one
    (after the first iterations few points move, so this costs almost nothing; measured in
    bench/large_k_bench.py). Large K x D: the touched clusters' sums are recomputed each
    iteration with :func:`sparse_partial_sums`. Either way the output is sparse and the
    result depends only on the block and the label sequence (deterministic).
    """

    def __init__(self, points: np.ndarray, n_clusters: int, dense_max_bytes: int = DENSE_SUMS_MAX_BYTES) -> None:
        self.points = points
        self.k = n_clusters
        self.dense = n_clusters * points.shape[1] * 8 <= dense_max_bytes
        self.labels: np.ndarray | None = None
        self.sums: np.ndarray | None = None

    def update(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse (idx, counts, sums) for ``labels``."""
        if not self.dense:
            return sparse_partial_sums(self.points, labels)
        if self.labels is None:
            self.sums, _ = partial_sums(self.points, labels, self.k)
        else:
            moved = np.flatnonzero(labels != self.labels)
            if 2 * len(moved) > len(labels):  # (early iterations: moving them costs twice a fresh sum)
                self.sums, _ = partial_sums(self.points, labels, self.k)
            elif len(moved):
                assert self.sums is not None  # (set with labels)
                for a in range(0, len(moved), SUM_CHUNK_ROWS * 4):  # (a gathered copy of a chunk at most)
                    part = moved[a:a + SUM_CHUNK_ROWS * 4]
                    rows = self.points[part]
                    add_column_sums(self.sums, rows, self.labels[part], sign=-1.0)
                    add_column_sums(self.sums, rows, labels[part])
        self.labels = labels.copy()
        counts = np.bincount(labels, minlength=self.k).astype(np.int64)
        idx = np.flatnonzero(counts).astype(np.int32)
        return idx, counts[idx], self.sums[idx]  # type: ignore[index]  # dense: set by the first update
