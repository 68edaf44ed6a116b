"""Exact nearest-centroid assignment that skips the points whose bounds prove it unchanged
(numpy/faiss only, no Spark).

After the first Lloyd iterations most points keep their centroid, yet exact search pays
N x K x D every iteration. Hamerly's bounds (Hamerly 2010, "Making k-means even faster")
carry, per point, a *lower bound* on its distance to every centroid other than its own.
When centroid j moves by s_j, the distance to any other centroid shrinks by at most
max_{j != a} s_j, so the bound stays valid after subtracting that; the distance to the
point's own centroid ``a`` is recomputed exactly (N x D). A point whose exact distance
to ``a`` is below its lower bound provably still has ``a`` as its nearest centroid and is
not searched; only the others go through faiss's exact search (which also returns the
second-nearest distance, the new lower bound). The result is the exact search's, up to
the float rounding of the search itself: a margin of a few float32 ulps of
``|x|^2 + |c|^2`` is kept, so a point is searched again whenever rounding could matter.

For ``cosine`` (unit vectors, the search by inner product) the bounds are Euclidean
distances on the sphere, ||x - c|| = sqrt(2 (1 - cos)); the reported distance is
``1 - cos`` as everywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curation_spark.method import candidate_search, centroid_index, kernels
from curation_spark.method.candidate_search import exact_distances
from curation_spark.method.row_threads import faiss_threads

#: Relative slack (of |x|^2 + max |c|^2) subtracted from squared second-nearest distances
#: from the GEMM identity before they become lower bounds: ~64 float32 ulps.
SEARCH_SLACK = 2.0 ** -17
#: Candidates per point in the second test: the nearest centroids of its previous centroid.
CANDIDATES = 32
#: Centroid counts up to which the exact candidate graph (K x K distances) is computed.
GRAPH_MAX_CLUSTERS = 16384
#: The candidate test runs only when the rows it would test hold at least this many values
#: (rows x D): below, its per-centroid Python loop costs more than one flat search of them
#: (the toy demo's 30,000 2-D points at K = 1000: ~10 of 15 s of its level-1 k-means).
CANDIDATE_MIN_VALUES = 1 << 19
#: Below this share of bounded rows settled by the bound test, the next full search looks
#: for one neighbour instead of two (a 2-neighbour search costs ~1.4x), keeping bounds for
#: every ``BOUND_PROBE_STRIDE``-th row only, to see whether they start paying.
BOUND_MIN_SHARE = 0.3
BOUND_PROBE_STRIDE = 8
#: Rows per exact search call: the searched rows are gathered into a copy, so this bounds
#: the extra memory (128 MiB at D = 128) whatever the block's size; a run of consecutive
#: rows (every row of the block) is searched in place.
SEARCH_CHUNK_ROWS = 1 << 18
#: Rows of the candidate test's trial (a strided sample of the unsure rows): the rest is
#: tested only if the trial's certified share makes it cheaper than searching them.
CANDIDATE_TRIAL_ROWS = 4096
#: The candidate test per row and per row x candidate x dim, and an exact search per row x
#: centroid x dim (one thread; seconds, as :mod:`curation_spark.method.centroid_index`'s).
COST_CANDIDATE_ROW = 0.25e-6
COST_CANDIDATE_MAC = 40e-12
COST_SEARCH_MAC = centroid_index.COST_EXACT_MAC
#: The bound test per row: its exact distance to its centroid, the bound's update and test.
COST_BOUND_ROW = 0.1e-6
#: Probed lists of the first call's guess (:func:`probe_guess`): with sqrt(P K) lists a row
#: is compared with about 2 sqrt(P K) centroids, so P = 1 costs ~2 / sqrt(K) of a flat search
#: (6 % at K = 1,000) and the candidate test then corrects most of its misses.
GUESS_PROBES = 1


def _search_two(x: np.ndarray, centroids: np.ndarray, distance: str,
                bounds: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and a valid lower bound on the distance to every other
    one (Euclidean, float64; +inf when K == 1), with faiss's exact flat search for 2
    neighbours; without ``bounds`` a search for 1 (~0.7x the time) and no bound (-inf)."""
    import faiss

    n, d = x.shape
    k = len(centroids)
    index = faiss.IndexFlatIP(d) if distance == "cosine" else faiss.IndexFlatL2(d)
    index.add(centroids)
    scores, labels = index.search(x, min(2, k) if bounds else 1)
    if not bounds:
        return labels[:, 0].astype(np.int64), np.full(n, -np.inf)
    if k < 2:
        return labels[:, 0].astype(np.int64), np.full(n, np.inf)
    if distance == "cosine":
        second_sq = 2.0 - 2.0 * scores[:, 1].astype(np.float64)
        slack = SEARCH_SLACK * 2.0
    else:
        second_sq = scores[:, 1].astype(np.float64)
        c_sq_max = float(np.einsum("ij,ij->i", centroids, centroids).max())
        slack = SEARCH_SLACK * (np.einsum("ij,ij->i", x, x).astype(np.float64) + c_sq_max)
    return labels[:, 0].astype(np.int64), np.sqrt(np.maximum(second_sq - slack, 0.0))


def _rows_of(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` for sorted unique ``rows``: a view when they are a run of consecutive
    rows, else a contiguous copy (of at most ``SEARCH_CHUNK_ROWS`` rows)."""
    if len(rows) and int(rows[-1]) - int(rows[0]) == len(rows) - 1:
        return x[int(rows[0]):int(rows[-1]) + 1]
    return np.ascontiguousarray(x[rows])


def _euclidean(dist: np.ndarray, distance: str) -> np.ndarray:
    """The reported distance as a Euclidean distance (what the bounds are in)."""
    if distance == "cosine":
        return np.sqrt(2.0 * dist.astype(np.float64))
    return dist


def probe_guess(x: np.ndarray, centroids: np.ndarray, distance: str, seed: int = 0,
                n_probes: int = GUESS_PROBES) -> np.ndarray:
    """A cheap, inexact nearest centroid for every row, for a first call with no previous
    labels: the probe search of :mod:`curation_spark.method.centroid_index` (an inverted file over
    the centroids, GEMM per list). Only a starting point: the candidate test certifies or
    corrects it and the rest is searched exactly, so the result does not depend on it."""
    coarse = centroid_index.train_coarse(centroids, n_probes, distance, seed)
    lists = centroid_index.CoarseLists.build(centroids, coarse, n_probes, distance)
    c_sq = candidate_search.squared_norms(centroids) if distance == "l2" else None
    return candidate_search.search_groups(x, centroids, c_sq, lists.start(x), lists.candidates, distance)


@dataclass
class CentroidGraph:
    """For every centroid a, its ``L`` nearest centroids (itself first) and ``radius[a]``,
    the exact distance to its (L+1)-th nearest: every centroid outside ``a``'s list is at
    least that far from ``a``. Exact (K x K distances in row chunks), so only for moderate K."""

    neighbours: np.ndarray
    radius: np.ndarray

    @classmethod
    def build(cls, centroids: np.ndarray, n_neighbours: int, chunk_rows: int = 1024) -> CentroidGraph:
        c = centroids.astype(np.float64)
        k = len(c)
        m = min(n_neighbours, k - 1)
        c_sq = np.einsum("ij,ij->i", c, c)
        neighbours = np.empty((k, m), dtype=np.int64)
        radius = np.empty(k, dtype=np.float64)
        for a in range(0, k, chunk_rows):
            b = min(k, a + chunk_rows)
            d2 = np.maximum(c_sq[a:b, None] + c_sq[None, :] - 2.0 * (c[a:b] @ c.T), 0.0)
            d2[np.arange(b - a), np.arange(a, b)] = -1.0  # itself first
            part = np.argpartition(d2, m, axis=1)[:, :m + 1]
            part_d = np.take_along_axis(d2, part, axis=1)
            order = np.argsort(part_d, axis=1, kind="stable")
            ranked = np.take_along_axis(part, order, axis=1)
            neighbours[a:b] = ranked[:, :m]
            radius[a:b] = np.sqrt(np.take_along_axis(part_d, order, axis=1)[:, m])
        # The GEMM identity above is float64: shave a relative 1e-9 so rounding never
        # makes a radius larger than the true distance.
        return cls(neighbours, radius * (1.0 - 1e-9))


def _search_candidates(x: np.ndarray, rows: np.ndarray, centroids: np.ndarray, c_sq: np.ndarray,
                       anchors: np.ndarray, graph: CentroidGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best and second-best centroid of rows ``rows`` of ``x`` among their anchor's graph
    neighbours: rows sharing an anchor share one GEMM (results are written in anchor order
    into contiguous slices and put back in ``rows`` order once). Returns (best labels,
    best squared distance with slack added, second-best squared distance with slack
    removed), float64 distances."""
    n = len(rows)
    order, sorted_anchor, starts, ends = kernels.runs(anchors)
    sorted_rows = rows[order]
    best = np.empty(n, dtype=np.int64)
    best_sq = np.empty(n, dtype=np.float64)
    second_sq = np.full(n, np.inf, dtype=np.float64)
    x_sq = np.empty(n, dtype=np.float64)
    c_sq32 = c_sq.astype(np.float32)
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        cand = graph.neighbours[int(sorted_anchor[lo])]
        xs = x[sorted_rows[lo:hi]]
        d2 = xs @ centroids[cand].T  # then ||c||^2 - 2 x.c in place: the ranking of ||x - c||^2
        d2 *= -2.0
        d2 += c_sq32[cand][None, :]
        pick = d2.argmin(axis=1)
        span = np.arange(hi - lo)
        best[lo:hi] = cand[pick]
        best_sq[lo:hi] = d2[span, pick]
        if len(cand) > 1:
            d2[span, pick] = np.inf
            second_sq[lo:hi] = d2.min(axis=1)
        x_sq[lo:hi] = np.einsum("ij,ij->i", xs, xs)
    best_sq += x_sq
    second_sq += x_sq
    slack = SEARCH_SLACK * (x_sq + float(c_sq.max()))
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)
    return best[back], (best_sq + slack)[back], np.maximum(second_sq - slack, 0.0)[back]


@dataclass
class AssignCounts:
    """How one :meth:`BoundedAssigner.assign` settled its rows, for the iteration log."""

    rows: int = 0
    by_bound: int = 0
    by_candidates: int = 0
    searched: int = 0
    #: Rows the candidate test tested (proven or not).
    tested: int = 0


class BoundedAssigner:
    """Exact assignment of one block across Lloyd iterations, searching as few points as
    its bounds allow.

    Keeps the block's labels, a per-row lower bound on the distance to every other
    centroid (float64: 8 bytes a row) and the previous centroids. Each call settles a row
    by the first of three tests that holds:

    1. *bound*: its exact distance to its previous centroid is below its lower bound
       (after the bound is lowered by the largest move of any other centroid): unchanged;
    2. *candidates*: among the ``CANDIDATES`` nearest centroids of its previous centroid
       ``a`` the best one, at distance d*, satisfies d* + d(x, a) <= r(a), the distance
       from ``a`` to the nearest centroid outside that list: by the triangle inequality
       no centroid outside the list is closer than d*;
    3. otherwise an exact faiss search over all centroids.

    A first call has no labels and no bounds: it starts the candidate test from a guess
    (the caller's, or :func:`probe_guess`, ~6 % of a flat search at K = 1,000), so even
    the first Lloyd iteration searches only the rows it cannot certify (measured at
    1M x 128, K = 1,000, one thread: 2.6 s against 12.6 s, 5 % of rows searched; at
    K = 4,000: 22.6 s against 45.5 s, 37 % searched).

    ``counts`` says how many rows each test settled in the last call.
    """

    def __init__(self, x: np.ndarray, distance: str = "l2", n_candidates: int = CANDIDATES) -> None:
        self.x = x
        self.distance = distance
        self.n_candidates = int(n_candidates)
        self.labels: np.ndarray | None = None
        self.lower: np.ndarray | None = None
        self.previous: np.ndarray | None = None
        self.counts = AssignCounts()
        #: Share of the rows with a bound that the bound test settled on the last call.
        self.bound_share = 1.0

    def _worth_candidates(self, rows: int, k: int) -> bool:
        """Whether the candidate test pays for ``rows`` unsure rows at ``k`` centroids."""
        return 2 * self.n_candidates < k <= GRAPH_MAX_CLUSTERS and rows * self.x.shape[1] >= CANDIDATE_MIN_VALUES

    def assign(self, centroids: np.ndarray, guess: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int64) and exact distances (float32) of every row to ``centroids``.

        ``guess``: labels to start from when there is no previous call (e.g. each point's
        nearest new centroid to its old one after resampling); only a starting point for
        the candidate test, the result is exact either way.
        """
        x, distance = self.x, self.distance
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        n, k = len(x), len(centroids)
        counts = AssignCounts(rows=n)
        if n == 0:
            self.counts = counts
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        fresh = self.labels is None or self.lower is None or self.previous is None \
            or self.previous.shape != centroids.shape
        if fresh and guess is None and self._worth_candidates(n, k):
            guess = probe_guess(x, centroids, distance)  # first call: no labels to start from
        if fresh and guess is None:
            labels, lower = _search_two(x, centroids, distance)
            dist = exact_distances(x, centroids, labels, distance)
            counts.searched = n
        else:
            if fresh:
                labels = np.asarray(guess, dtype=np.int64).copy()
                lower = np.full(n, -np.inf)
            else:
                labels = self.labels.copy()  # type: ignore[union-attr]  # not fresh: the last call set it
                lower = self.lower - self._other_shift(centroids, labels)
            dist = exact_distances(x, centroids, labels, distance)
            own = _euclidean(dist, distance)
            unsure = np.flatnonzero(own >= lower)
            counts.by_bound = n - len(unsure)
            bounded = int(np.count_nonzero(lower > -np.inf))
            self.bound_share = (bounded - (len(unsure) - (n - bounded))) / bounded if bounded else 1.0
            if len(unsure) and self._worth_candidates(len(unsure), k):
                unsure = self._candidate_test(centroids, labels, lower, dist, own, unsure, counts)
            if len(unsure):
                self._search(centroids, unsure, labels, lower, dist, with_bounds=self.bound_share >= BOUND_MIN_SHARE)
            counts.searched = len(unsure)
        self.labels, self.lower, self.previous, self.counts = labels, lower, centroids.copy(), counts
        return labels, dist

    def modelled_cost(self, k: int) -> float:
        """Modelled seconds of the next :meth:`assign` for ``k`` centroids, from what the last
        call did (counted, not timed: the index path weighs it against its own): the bound
        test of every row, the candidate test of the rows it tested, an exact search of the
        rows it searched (for two neighbours while the bounds pay, else one). Before the
        first call: a full two-neighbour search."""
        n, dim = self.x.shape
        last = self.counts
        share = (lambda v: v / last.rows * n) if last.rows else (lambda v: float(n))
        searched, tested = share(last.searched), (share(last.tested) if last.rows else 0.0)
        mac = COST_SEARCH_MAC if self.bound_share >= BOUND_MIN_SHARE else centroid_index.COST_FLAT_MAC
        return (n * COST_BOUND_ROW + tested * (COST_CANDIDATE_ROW + self.n_candidates * dim * COST_CANDIDATE_MAC)
                + searched * k * dim * mac / max(1, faiss_threads()))

    def _candidate_test(self, centroids: np.ndarray, labels: np.ndarray, lower: np.ndarray, dist: np.ndarray,
                        own: np.ndarray, unsure: np.ndarray, counts: AssignCounts) -> np.ndarray:
        """Test 2 on the ``unsure`` rows (labels, bounds and distances of the rows it proves
        are updated in place); returns the rows still unsure. Tried first on a strided
        sample: where it proves too few rows to pay for itself against searching them
        (counted costs, as :mod:`curation_spark.method.centroid_index`'s), the rest is not tested."""
        x, distance = self.x, self.distance
        k, dim = centroids.shape
        graph = CentroidGraph.build(centroids, self.n_candidates)
        c_sq = np.einsum("ij,ij->i", centroids, centroids).astype(np.float64)
        trial = np.zeros(len(unsure), dtype=bool)
        trial[np.linspace(0, len(unsure) - 1, min(len(unsure), CANDIDATE_TRIAL_ROWS)).astype(np.int64)] = True
        proven = np.zeros(len(unsure), dtype=bool)
        for part in (trial, ~trial):
            rows_in = unsure[part]
            if not len(rows_in):
                continue
            anchors = labels[rows_in]
            best, best_sq, second_sq = _search_candidates(x, rows_in, centroids, c_sq, anchors, graph)
            outside = graph.radius[anchors] - own[rows_in]  # lower bound for non-candidates
            ok = np.sqrt(best_sq) <= outside
            rows = rows_in[ok]
            changed = rows[best[ok] != labels[rows]]
            labels[rows] = best[ok]
            lower[rows] = np.minimum(np.sqrt(second_sq[ok]), outside[ok])
            if len(changed):
                dist[changed] = exact_distances(x[changed], centroids, labels[changed], distance)
            proven[np.flatnonzero(part)[ok]] = True
            if part is trial:
                test_cost = COST_CANDIDATE_ROW + self.n_candidates * dim * COST_CANDIDATE_MAC
                saved = float(ok.mean()) * k * dim * COST_SEARCH_MAC / max(1, faiss_threads())
                if saved < test_cost:
                    break
        counts.by_candidates = int(proven.sum())
        counts.tested = int(trial.sum()) if part is trial else len(unsure)
        return unsure[~proven]

    def _search(self, centroids: np.ndarray, rows: np.ndarray, labels: np.ndarray, lower: np.ndarray,
                dist: np.ndarray, with_bounds: bool) -> None:
        """Test 3: exact search of ``rows``, in place. Without ``with_bounds`` (the bounds did
        not pay last time) only every ``BOUND_PROBE_STRIDE``-th row gets a new bound."""
        x, distance = self.x, self.distance
        keep = np.ones(len(rows), dtype=bool) if with_bounds else (np.arange(len(rows)) % BOUND_PROBE_STRIDE == 0)
        parts = [(rows[keep], True), (rows[~keep], False)]
        if not with_bounds and len(rows) == len(x):
            # Every row: searched in place (gathering 7/8 of the block costs more than
            # searching the strided rows twice), then those again for their bounds.
            parts = [(rows, False), (rows[keep], True)]
        for rows_part, bounds in parts:
            for lo in range(0, len(rows_part), SEARCH_CHUNK_ROWS):
                sub = rows_part[lo:lo + SEARCH_CHUNK_ROWS]
                sub_x = _rows_of(x, sub)
                sub_labels, sub_lower = _search_two(sub_x, centroids, distance, bounds=bounds)
                labels[sub] = sub_labels
                lower[sub] = sub_lower
                dist[sub] = exact_distances(sub_x, centroids, sub_labels, distance)

    def _other_shift(self, centroids: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per row, the largest move since the last call of any centroid but its own."""
        moved = centroids.astype(np.float64) - self.previous.astype(np.float64)  # type: ignore[union-attr]  # called when not fresh
        shift = np.sqrt(np.einsum("ij,ij->i", moved, moved))
        if len(shift) < 2:
            return np.zeros(len(labels))
        top = np.argsort(shift, kind="stable")[-2:]  # [second largest, largest]
        return np.where(labels == top[1], shift[top[0]], shift[top[1]])
