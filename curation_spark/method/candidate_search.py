"""Searching a block's points against candidate centroids (numpy/faiss only, no Spark).

The kernels under the index path (:mod:`curation_spark.method.centroid_index`) and the
bounded exact search (:mod:`curation_spark.method.bounded_assign`): faiss's exact flat
search, GEMM searches where groups of points share their candidate centroids (one GEMM per
group, or batched GEMMs when every group has the same number of candidates) and the exact
distance of each point to its centroid. Groups and row chunks are split over faiss's
threads (:mod:`curation_spark.method.row_threads`); results never depend on the thread
count.

Conventions as in :mod:`curation_spark.method.kernels`: float32 C-contiguous arrays; for
``cosine`` both sides are L2-normalised, the search maximises the inner product and the
reported distance is ``1 - cos``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from curation_spark.method import kernels, row_threads
from curation_spark.method.row_threads import faiss_threads


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row (the ``||c||^2`` term of the GEMM identity)."""
    return np.einsum("ij,ij->i", x, x)


def flat_index(d: int, distance: str):
    """An empty faiss exact index for ``distance`` (inner product for cosine)."""
    import faiss

    return faiss.IndexFlatIP(d) if distance == "cosine" else faiss.IndexFlatL2(d)


def nearest(x: np.ndarray, centres: np.ndarray, distance: str = "l2", k: int = 1) -> np.ndarray:
    """Exact ``k`` nearest centres of each row (faiss flat search, BLAS): (n, k) int64."""
    index = flat_index(centres.shape[1], distance)
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    _, labels = index.search(np.ascontiguousarray(x, dtype=np.float32), int(min(k, len(centres))))
    return labels.astype(np.int64)


def search_groups(x: np.ndarray, centroids: np.ndarray, c_sq: np.ndarray | None, start: np.ndarray,
                  candidates_of: Callable[[int], np.ndarray], distance: str = "l2", k: int = 1,
                  threads: int | None = None, ordered: bool = True) -> np.ndarray:
    """Best ``k`` centroids of each point among ``candidates_of(start[i])``; points with the
    same start share one GEMM, so this runs at BLAS speed however small K/N is. The groups
    are split over ``threads`` threads (default: faiss's thread count, the cores this level
    was given; the result does not depend on it).

    Returns (n,) int64 labels for ``k == 1``, else (n, k): the k best, best first when
    ``ordered``, else in no order (rows whose candidate set is smaller than k repeat their
    best).
    """
    n = len(x)
    labels = np.empty((n, k), dtype=np.int64)
    if n == 0:
        return labels[:, 0] if k == 1 else labels
    order, sorted_start, first_rows, ends = kernels.runs(start)
    los, his = first_rows.tolist(), ends.tolist()

    def groups(first: int, last: int) -> None:
        for lo, hi in zip(los[first:last], his[first:last], strict=True):
            cand = candidates_of(int(sorted_start[lo]))
            # A long-tailed block puts a large share of its rows in one group: its score
            # matrix is cut into row chunks of at most GROUP_SCORE_BYTES.
            step = max(SMALL_GROUP_ROWS, GROUP_SCORE_BYTES // (4 * max(1, len(cand))))
            for a in range(lo, hi, step):
                rows = order[a:min(hi, a + step)]
                labels[rows] = _best_of(np.take(x, rows, axis=0), centroids, c_sq, cand, distance, k, ordered)

    work = float(n) * x.shape[1] * min(len(centroids), 64)
    n_threads = row_threads.threads_for_work(work, faiss_threads() if threads is None else threads)
    if n < SMALL_GROUP_ROWS * len(los):  # small groups: the Python loop holds the GIL, threads only contend
        n_threads = 1
    row_threads.run_slices(groups, row_threads.balanced_cuts(np.subtract(his, los), n_threads), n_threads)
    return labels[:, 0] if k == 1 else labels


def _to_ranking(scores: np.ndarray, c_sq: np.ndarray | None, cand: np.ndarray, distance: str) -> np.ndarray:
    """Inner products ``scores`` (..., candidates) turned in place into a score that ranks
    candidates by distance, smallest first; ``cand`` indexes ``c_sq`` and broadcasts over
    the scores' last axis. For ``l2``: ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, and ||x||^2
    does not change the ranking, so ||c||^2 / 2 - x.c (in place: the score matrix is as big
    as the GEMM's work). For cosine: -x.c."""
    if distance == "l2":
        np.subtract(c_sq[cand] * 0.5, scores, out=scores)  # type: ignore[index]  # given for l2
    else:
        np.negative(scores, out=scores)
    return scores


def _best_of(xs: np.ndarray, centroids: np.ndarray, c_sq: np.ndarray | None, cand: np.ndarray, distance: str,
             k: int, ordered: bool = True) -> np.ndarray:
    """The best ``k`` of ``cand`` for rows ``xs`` ((rows, k), best first if ``ordered``): one GEMM."""
    scores = _to_ranking(xs @ np.take(centroids, cand, axis=0).T, c_sq, cand[None, :], distance)
    if k == 1:
        return cand[scores.argmin(axis=1)][:, None]
    kk = min(k, len(cand))
    if kk == len(cand):
        top = np.broadcast_to(np.arange(len(cand)), (len(xs), len(cand)))
    else:
        top = np.argpartition(scores, kk - 1, axis=1)[:, :kk]
    # Sorting the k best costs ~3x the partition at k = 1,024 candidates of 3,200.
    ranked = np.take_along_axis(top, np.argsort(np.take_along_axis(scores, top, axis=1), axis=1), axis=1) \
        if ordered else top
    best = cand[ranked]
    if kk < k:
        best = np.concatenate([best, np.repeat(best[:, :1], k - kk, axis=1)], axis=1)
    return best


#: Mean rows per group below which :func:`search_groups` stays on one thread.
SMALL_GROUP_ROWS = 64
#: Largest score matrix (rows x candidates, float32) of one GEMM in :func:`search_groups`:
#: a group's rows are searched in chunks below it (measured: one group of a long-tailed
#: 1M x 128 block held 281 MiB of scores at K = 1,000, 64 probes).
GROUP_SCORE_BYTES = 32 << 20
#: Rows per padded chunk of :func:`search_fixed` (a group is split into chunks of at most
#: this many) and the step its chunk sizes are rounded up to.
FIXED_CHUNK_ROWS = 64
FIXED_CHUNK_STEP = 8
#: Candidate centroids gathered per batch of :func:`search_fixed` (bytes): small enough
#: to stay in cache (8 MB batches ran 1.7x slower, 32 MB 2.4x, at K = 20,000, width 1,024).
FIXED_BATCH_BYTES = 2 << 20


def search_fixed(x: np.ndarray, centroids: np.ndarray, c_sq: np.ndarray | None, start: np.ndarray,
                 table: np.ndarray, width: int, distance: str = "l2", threads: int | None = None,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """Nearest centroid of each point among ``table[start[i], :width]``: the prior path's
    search, where every group has the same number of candidates. Same result as
    :func:`search_groups` with ``candidates_of = lambda a: table[a, :width]``, but the small
    groups (N/K ~ 20 rows at the upper levels) are padded to a few chunk sizes and stacked
    into batched GEMMs (one ``matmul`` for many groups, no Python loop per group), split
    over ``threads`` threads (default: faiss's). ``rows``: search only these rows of ``x``
    (``start`` is then one per row of them; no copy of ``x``). Returns (len(start),) int64
    labels."""
    n, dim = len(start), x.shape[1]
    labels = np.empty(n, dtype=np.int64)
    if n == 0:
        return labels
    order, sorted_start, lo, ends = kernels.runs(start)
    x_rows = order if rows is None else np.asarray(rows, dtype=np.int64)[order]
    sizes = ends - lo
    per_group = -(-sizes // FIXED_CHUNK_ROWS)  # chunks of at most FIXED_CHUNK_ROWS rows
    group_of = np.repeat(np.arange(len(lo)), per_group)
    chunk_lo = lo[group_of] + (np.arange(len(group_of)) - np.repeat(np.cumsum(per_group) - per_group, per_group)) \
        * FIXED_CHUNK_ROWS
    chunk_n = np.minimum(FIXED_CHUNK_ROWS, (lo + sizes)[group_of] - chunk_lo)
    padded = np.where(chunk_n <= 4, 1 << np.ceil(np.log2(chunk_n)).astype(np.int64),
                      -(-chunk_n // FIXED_CHUNK_STEP) * FIXED_CHUNK_STEP)
    per_batch = max(1, FIXED_BATCH_BYTES // (width * dim * 4))
    batches = [(int(p), sel[a:a + per_batch]) for p in np.unique(padded)
               for sel in [np.flatnonzero(padded == p)] for a in range(0, len(sel), per_batch)]

    def run(first: int, last: int) -> None:
        for rows_per_chunk, sel in batches[first:last]:
            offsets = np.minimum(np.arange(rows_per_chunk)[None, :], chunk_n[sel][:, None] - 1)  # pad: repeat a row
            at = chunk_lo[sel][:, None] + offsets  # (B, p) positions in the sorted order
            cand = table[sorted_start[chunk_lo[sel]], :width]  # (B, width)
            # np.take, not fancy indexing: 2-3x faster gathers of whole rows.
            products = np.matmul(np.take(x, x_rows[at], axis=0), np.take(centroids, cand, axis=0).transpose(0, 2, 1))
            scores = _to_ranking(products, c_sq, cand[:, None, :], distance)  # (B, p, width)
            labels[order[at]] = np.take_along_axis(cand, scores.argmin(axis=2), axis=1)

    n_threads = row_threads.threads_for_work(float(n) * width * dim, faiss_threads() if threads is None else threads)
    weights = [len(sel) * p for p, sel in batches]
    row_threads.run_slices(run, row_threads.balanced_cuts(weights, n_threads), n_threads)
    return labels


def exact_distances(x: np.ndarray, centroids: np.ndarray, labels: np.ndarray, distance: str = "l2",
                    chunk_rows: int = 16384, threads: int | None = None) -> np.ndarray:
    """Distance of each point to its given centroid, computed directly (not through the
    GEMM identity): Euclidean for ``l2``, ``1 - cos`` for ``cosine``. float32. Chunks of
    rows are split over ``threads`` (default: faiss's thread count)."""
    n = len(x)
    out = np.empty(n, dtype=np.float32)

    def chunks(first: int, last: int) -> None:
        for a in range(first * chunk_rows, min(n, last * chunk_rows), chunk_rows):
            b = min(n, a + chunk_rows)
            c = centroids[labels[a:b]]
            if distance == "l2":
                diff = x[a:b] - c
                out[a:b] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            else:
                out[a:b] = np.maximum(1.0 - np.einsum("ij,ij->i", x[a:b], c), 0.0)

    n_chunks = -(-n // chunk_rows)
    n_threads = row_threads.threads_for_work(float(n) * x.shape[1] * 16,
                                             faiss_threads() if threads is None else threads)
    row_threads.run_slices(chunks, row_threads.balanced_cuts([1.0] * n_chunks, n_threads), n_threads)
    return out

