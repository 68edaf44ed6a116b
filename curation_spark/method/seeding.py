"""Two-level k-means initialisation: an init whose cost grows like K^1.5, not K^2.

Greedy k-means++ (:func:`curation_spark.method.kernels.kmeans_plus_plus`) costs
O(K * trials * n * D) on an n-point sample, and the sample itself grows with K (about 20
points per cluster), so it is O(K^2) in practice: more than 13 minutes at K = 20,000.

:func:`two_level_init` instead

1. draws a seeded sub-sample of at most ``COARSE_POINTS_PER_CLUSTER`` (256) points per
   coarse cluster and runs k-means++ and ``coarse_iters`` Lloyd iterations on it with
   ``Kc = round(sqrt(K))`` clusters: the *coarse* centroids (:func:`coarse_centroids`);
2. assigns the whole sample to the coarse centroids (:func:`coarse_labels`);
3. gives every coarse cluster a number of fine clusters (:func:`fine_plan`,
   :func:`gain_allocation`): first proportional to its size (:func:`allocate_clusters`,
   largest remainder, at least 1 per non-empty cluster, summing to K); with the default
   ``allocation="gain"`` that count only bounds the search and the final counts follow
   the k-means++ potential, see below;
4. inside every coarse cluster runs a small k-means, k-means++ then ``fine_iters`` Lloyd
   iterations, with its count (:func:`fine_init_group`).

Result: exactly K centroids, ordered by coarse cluster then fine index.

Allocation by gain (default). Counts proportional to size put many centres inside one
big, compact coarse cluster and too few in a small one that spans several separate modes.
On long-tailed mixtures (bench/init_bench.py) the objective after 5 Lloyd iterations was
23-59 % above k-means++ at K = 40 (30 components, D = 16; 2-7 components left without a
centre), and 19 % / 90 % / 30 % above at K = 200 / 1000 / 2048 (1000 components, D = 64).
So each coarse cluster ``c`` first runs k-means++ up to
``upper_c = min(size_c, 2 * proportional_c + 2)`` centres and records the potential
(sum of squared distances to the nearest centre) after each one; the K centres then go,
one at a time, to the cluster whose next centre lowers its potential most (every
non-empty cluster gets at least one). That is global greedy k-means++ restricted to
"a centre belongs to one coarse cluster"; the fine step then takes the first ``a_c``
k-means++ centres of its cluster (k-means++ is prefix-stable: the first ``a`` centres do
not depend on how many more are drawn, since the trial count is fixed by ``upper_c``).
``allocation="size"`` keeps the proportional counts (one pass fewer on Spark).

Known limit. In high dimension the coarse Voronoi cells cut through many natural clusters
(30 % of the 1000 components at K = 1000, D = 64); a cut cluster tends to get a centre on
each side. When K is close to the number of natural clusters this costs quality: 7-9 %
above k-means++ after 5 Lloyd iterations at K = 1000 on 1000 components, vs within
+-2.5 % at K = 40, 200 and +0.6 % at K = 2048.

Large groups. A coarse cluster whose proportional count exceeds ``FINE_MAX_DIRECT`` keeps
that count and is split again the same way (two-level inside the group), so no single
k-means++ has more than ``2 * FINE_MAX_DIRECT + 2`` centres.

Determinism. No global random state is used. Every random choice draws from a generator
seeded by ``seed`` and the position in the hierarchy: coarse cluster ``c``'s fine step
uses ``seeds.seeded_rng(seed, 0x2E1, c)``, so a group's result depends only on
(seed, c, its count, its points in id order), never on the order in which groups are
processed. The coarse label of a row (:func:`coarse_labels`) is a function of the row
alone (faiss proposes candidates, a row-by-row float64 distance picks the winner), so it
does not depend on how rows are batched. That is what lets
:func:`curation_spark.engine.seeding_spark.two_level_init_spark` run the per-group work on Spark
executors and return the same centroids, bit for bit, as :func:`two_level_init` on the
same sample.

Cost (n sample points, K clusters, Kc = sqrt(K), D dimensions, t = ``FINE_KPP_TRIALS``
k-means++ trials, I = coarse_iters, J = fine_iters; no step is O(K^2)):

* coarse k-means++ on m <= 256 Kc points: O(Kc t m D) = O(256 K t D); coarse Lloyd
  O(I m Kc D) = O(256 I K D);
* coarse labels: O(n Kc D) (faiss) + O(4 n D) (float64 check);
* fine step: sum over groups of O(upper_c t n_c D + J n_c a_c D), with
  a_c <= upper_c <= 2 K n_c / n + 4 and upper_c <= 2 FINE_MAX_DIRECT + 2, so this is
  O(n D (t + J) * min(sqrt(K) * imbalance, FINE_MAX_DIRECT)): for balanced coarse
  clusters O(n sqrt(K) D (t + J)), i.e. O(K^1.5 D log K) with the default sample of
  ~20 K points (measured: 21-23 s at K = 20,000, n = 400,000, D = 64, one thread);
* gain allocation: O(K log Kc).
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from curation_spark.method import kernels
from curation_spark.method.seeds import seeded_rng

#: Coarse k-means runs on at most this many sample points per coarse cluster.
COARSE_POINTS_PER_CLUSTER = 256
#: A coarse cluster whose proportional count exceeds this is split again (recursion).
FINE_MAX_DIRECT = 256
#: Gain allocation: a coarse cluster may get up to this many times its proportional count (+2).
FINE_OVERSHOOT = 2
#: k-means++ candidates per centre in the fine groups. Measured at K = 20,000, N = 400,000,
#: D = 64 (one thread, bench/init_bench.py's data, another job running): 2 + ln(count) (about 8) took 88.5 s and
#: gave 1.3226e6 / 1.3175e6 / 1.3159e6 after 1 / 3 / 5 faiss Lloyd iterations; 2 took
#: 29.7 s and gave 1.3246e6 / 1.3192e6 / 1.3175e6 (+0.12 %), still below faiss's random
#: init (1.3643e6 / 1.3265e6 / 1.3202e6).
FINE_KPP_TRIALS = 2
#: Groups with at most this many k-means++ centres keep 2 + ln(count) trials (at K = 40,
#: groups of ~7 centres, 2 trials were 24 % worse after 5 Lloyd iterations).
FULL_TRIALS_MAX_CENTRES = 32
#: Candidates proposed by faiss per row before the exact float64 choice of the coarse label.
COARSE_CANDIDATES = 4
#: Rows per chunk of the float64 label check (bounds its scratch memory).
LABEL_CHUNK_ROWS = 16384
#: Default Lloyd iterations of the coarse and of the fine k-means.
COARSE_ITERS = 10
FINE_ITERS = 5
#: Lloyd searches below this many multiply-adds (n * k * d) run on one faiss thread: on a
#: busy 2-core machine OpenMP start-up made small searches ~10x slower with 2 threads (the
#: result does not depend on the thread count).
SMALL_SEARCH_FLOPS = 1 << 24
#: Recursion guard for groups split again (depth of nested two-level splits).
MAX_DEPTH = 8
ALLOCATIONS = ("gain", "size")

# Tags mixed into the seeds so the streams of the different steps never coincide.
_TAG_SUBSAMPLE = 0x2DF
_TAG_COARSE = 0x2E0
_TAG_FINE = 0x2E1

__all__ = [
    "allocate_clusters",
    "two_level_init",
    "fine_init_group",
    "fine_gain_curve",
    "fine_plan",
    "gain_allocation",
    "FinePlan",
    "n_coarse_clusters",
    "subsample_positions",
    "coarse_centroids",
    "coarse_labels",
    "prepare_points",
    "kpp_trials",
]


# --------------------------------------------------------------------------- allocation


def allocate_clusters(sizes: np.ndarray, k: int) -> np.ndarray:
    """How many of ``k`` fine clusters each coarse cluster gets.

    Proportional to ``sizes`` by the largest-remainder method: every cluster first gets
    ``floor(k * size / total)``, the clusters with the largest remainders get one more
    (equal remainders: lower index first). When ``k`` is at least the number of non-empty
    clusters, every non-empty cluster gets at least 1: clusters whose quota is below 1 are
    given exactly 1 and the rest of ``k`` is shared among the others in proportion to
    their sizes (repeated until every remaining quota is >= 1). Empty clusters get 0 and
    no cluster gets more than its size.

    Parameters
    ----------
    sizes : (m,) non-negative integers
    k : total number of fine clusters, ``0 <= k <= sizes.sum()``

    Returns
    -------
    (m,) int64, summing to ``k``.
    """
    s = np.asarray(sizes)
    if s.ndim != 1:
        raise ValueError(f"sizes must be one-dimensional, got shape {s.shape}")
    if s.dtype.kind not in "iuf":
        raise ValueError(f"sizes must be numbers, got dtype {s.dtype}")
    if s.dtype.kind == "f" and not (np.all(np.isfinite(s)) and np.all(s == np.floor(s))):
        raise ValueError("sizes must be whole numbers")
    s = s.astype(np.int64)
    if np.any(s < 0):
        raise ValueError("sizes must be >= 0")
    k = int(k)
    total = int(s.sum())
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k > total:
        raise ValueError(f"cannot allocate k={k} clusters to {total} points (k must be <= sizes.sum())")
    out = np.zeros(len(s), dtype=np.int64)
    if k == 0:
        return out
    active = s > 0
    fixed = np.zeros(len(s), dtype=bool)
    if k >= int(active.sum()):
        # Clusters whose quota is below 1 get exactly 1; recompute the quotas of the rest.
        while True:
            rest: np.ndarray = active & ~fixed
            k_rest = k - int(fixed.sum())
            t_rest = int(s[rest].sum())
            small = rest & (_mul(s, k_rest) < t_rest)
            if not small.any():
                break
            fixed |= small
        out[fixed] = 1
    rest = np.flatnonzero(active & ~fixed)
    if len(rest) == 0:
        return out
    k_rest = k - int(fixed.sum())
    t_rest = int(s[rest].sum())
    num = _mul(s[rest], k_rest)
    base = num // t_rest
    rem = num - base * t_rest
    extra = k_rest - int(base.sum())
    # Largest remainders first; ties by lower index (lexsort: last key is the primary one).
    order = np.lexsort((rest, -rem))
    base[order[:extra]] += 1
    out[rest] = base
    return out


def _mul(a: np.ndarray, k: int) -> np.ndarray:
    """``a * k`` exactly (falls back to Python integers if int64 could overflow)."""
    a = np.asarray(a, dtype=np.int64)
    if len(a) and int(a.max()) * max(int(k), 1) >= 2 ** 62:
        return np.array([int(v) * int(k) for v in a], dtype=object)
    return a * np.int64(k)


def kpp_trials(n_centres: int) -> int:
    """k-means++ candidates per centre of a fine group: greedy k-means++'s usual
    ``2 + floor(ln n)`` for small groups (where a bad centre costs most and trials are
    cheap), ``FINE_KPP_TRIALS`` above ``FULL_TRIALS_MAX_CENTRES`` centres (the fine step's
    cost is linear in it; see the constant for what it saves)."""
    n = max(1, int(n_centres))
    return 2 + int(math.log(n)) if n <= FULL_TRIALS_MAX_CENTRES else FINE_KPP_TRIALS


@dataclass(frozen=True)
class FinePlan:
    """Per coarse cluster: the proportional count, whether it is split again, and the
    length of its k-means++ gain curve (0 for empty and split clusters)."""

    sizes: np.ndarray
    proportional: np.ndarray
    split: np.ndarray
    upper: np.ndarray

    def fixed(self) -> np.ndarray:
        """Counts that do not depend on gains: proportional for split clusters, else 0."""
        return np.where(self.split, self.proportional, 0).astype(np.int64)


def fine_plan(sizes: np.ndarray, k: int) -> FinePlan:
    """Bounds of the fine step from the coarse cluster sizes (see the module notes)."""
    s = np.asarray(sizes, dtype=np.int64)
    prop = allocate_clusters(s, k)
    split = prop > FINE_MAX_DIRECT
    upper = np.minimum(s, FINE_OVERSHOOT * prop + 2)
    upper[(prop == 0) | split] = 0
    return FinePlan(s, prop, split, upper.astype(np.int64))


def gain_allocation(plan: FinePlan, curves: Mapping[int, np.ndarray], k: int) -> np.ndarray:
    """Final counts: split clusters keep their proportional count; every other non-empty
    cluster gets 1, then the remaining centres go one at a time to the cluster whose next
    k-means++ centre lowers its potential most (equal gains: lower index), never more
    than its ``upper``.

    ``curves[c]`` is :func:`fine_gain_curve` of cluster ``c`` (length ``plan.upper[c]``):
    the potential after 1, 2, ... centres. O(k log Kc).
    """
    alloc = plan.fixed()
    active = np.flatnonzero(plan.upper > 0)
    alloc[active] = 1
    budget = int(k) - int(alloc.sum())
    if budget < 0:
        raise ValueError(f"k={k} is smaller than the number of non-empty coarse clusters")
    pots: dict[int, np.ndarray] = {}
    heap: list[tuple[float, int]] = []
    for c in active.tolist():
        curve = np.asarray(curves[c], dtype=np.float64)
        if len(curve) != plan.upper[c]:
            raise ValueError(f"coarse cluster {c}: gain curve of length {len(curve)}, expected {plan.upper[c]}")
        pots[c] = curve
        if len(curve) > 1:
            heap.append((-(float(curve[0]) - float(curve[1])), c))
    heapq.heapify(heap)
    while budget > 0:
        if not heap:
            raise ValueError("gain allocation ran out of candidates (inconsistent plan)")
        _, c = heapq.heappop(heap)
        alloc[c] += 1
        budget -= 1
        a = int(alloc[c])
        if a < plan.upper[c]:
            curve = pots[c]
            heapq.heappush(heap, (-(float(curve[a - 1]) - float(curve[a])), c))
    return alloc


# --------------------------------------------------------------------------- steps


def prepare_points(points: np.ndarray, distance: str) -> np.ndarray:
    """C-contiguous float32 rows, L2-normalised for cosine (row by row, so a row gives the
    same bits whatever array it is part of)."""
    if distance == "cosine":
        return kernels.normalize_rows(points)
    if distance != "l2":
        raise ValueError(f"distance: unknown value {distance!r} (choose l2 or cosine)")
    return np.ascontiguousarray(points, dtype=np.float32)


def n_coarse_clusters(k: int, n_points: int) -> int:
    """``round(sqrt(k))`` coarse clusters, at least 1, at most ``min(k, n_points)``."""
    return int(max(1, min(int(round(math.sqrt(k))), k, n_points)))


def subsample_positions(n: int, k: int, key: Sequence[int]) -> np.ndarray:
    """Sorted positions (in the sample's id order) of the coarse k-means sub-sample: all
    rows when ``n <= 256 * Kc``, else ``256 * Kc`` rows drawn without replacement from
    ``seeded_rng(*key, 0x2DF)``. ``key`` is ``(seed,)`` at the top level."""
    kc = n_coarse_clusters(k, n)
    m = min(n, COARSE_POINTS_PER_CLUSTER * kc)
    if m >= n:
        return np.arange(n, dtype=np.int64)
    rng = seeded_rng(*key, _TAG_SUBSAMPLE)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def coarse_centroids(sub: np.ndarray, k: int, key: Sequence[int], distance: str = "l2",
                     n_iters: int = COARSE_ITERS) -> np.ndarray:
    """The coarse centroids: k-means++ (``seeded_rng(*key, 0x2E0)``) then ``n_iters``
    Lloyd iterations on the prepared sub-sample, with :func:`n_coarse_clusters` clusters.
    Exact duplicate centroids (only possible with duplicate points) are dropped, keeping
    the first, so ties between coarse centroids cannot occur."""
    kc = n_coarse_clusters(k, len(sub))
    rng = seeded_rng(*key, _TAG_COARSE)
    init = kernels.kmeans_plus_plus(sub, kc, rng)
    centroids = _lloyd(sub, init, n_iters, distance) if n_iters > 0 else init
    _, first = np.unique(centroids, axis=0, return_index=True)
    return np.ascontiguousarray(centroids[np.sort(first)], dtype=np.float32)


def coarse_labels(x: np.ndarray, centroids: np.ndarray, distance: str = "l2") -> np.ndarray:
    """Nearest coarse centroid of every prepared row, as a function of the row alone.

    faiss proposes the ``COARSE_CANDIDATES`` nearest centroids; the winner among them is
    chosen with a float64 score computed row by row (squared L2, or minus the inner
    product for cosine), lowest index on ties. A float32 GEMM's rounding may depend on the
    batch a row is in; this choice does not, so executors that see the rows in other
    batches give the same labels as the driver.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    n, d = x.shape
    labels = np.zeros(n, dtype=np.int64)
    if n == 0 or len(c) == 1:
        return labels
    m = min(COARSE_CANDIDATES, len(c))
    index = faiss.IndexFlatIP(d) if distance == "cosine" else faiss.IndexFlatL2(d)
    index.add(c)
    c64 = c.astype(np.float64)
    for start in range(0, n, LABEL_CHUNK_ROWS):
        xb = x[start:start + LABEL_CHUNK_ROWS]
        _, cand = index.search(xb, m)
        cand = np.sort(cand, axis=1)  # ascending index, so argmin's first hit is the lowest
        xb64 = xb.astype(np.float64)[:, None, :]
        if distance == "cosine":
            score = -np.ascontiguousarray(xb64 * c64[cand]).sum(axis=-1)
        else:
            score = np.square(np.ascontiguousarray(xb64 - c64[cand])).sum(axis=-1)
        labels[start:start + len(xb)] = cand[np.arange(len(xb)), np.argmin(score, axis=1)]
    return labels


def _kmeans_pp(x: np.ndarray, n_centres: int, rng: np.random.Generator, trials: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ on prepared rows, as :func:`kernels.kmeans_plus_plus` but with a
    fixed trial count and returning row indices and the potential after each centre.

    Prefix-stable: the first ``a`` indices do not depend on ``n_centres``. Once every
    point coincides with a centre (fewer distinct points than centres) rows are drawn at
    random, so the count is always ``n_centres``. O(n_centres * trials * n * d).
    """
    n = len(x)
    if n_centres < 1 or n_centres > n:
        raise ValueError(f"n_centres must be in [1, {n}], got {n_centres}")
    x64 = x.astype(np.float64)
    sq = (x64 * x64).sum(axis=1)
    idx = np.empty(n_centres, dtype=np.int64)
    pots = np.empty(n_centres, dtype=np.float64)
    first = int(rng.integers(n))
    idx[0] = first
    closest = _sq_dists(x64, sq, x64[first:first + 1])[:, 0]
    potential = float(closest.sum())
    pots[0] = potential
    for j in range(1, n_centres):
        if potential <= 0:
            cand = rng.integers(n, size=trials)
        else:
            cumulative = np.cumsum(closest)
            cand = np.minimum(np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right"), n - 1)
        new_closest = np.minimum(closest[:, None], _sq_dists(x64, sq, x64[cand]))
        totals = new_closest.sum(axis=0)
        best = int(np.argmin(totals))
        idx[j] = cand[best]
        closest = new_closest[:, best]
        potential = float(totals[best])
        pots[j] = potential
    return idx, pots


def _sq_dists(x64: np.ndarray, sq: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Squared distances (n, m) from float64 rows to a few float64 candidates via GEMM
    (as ``kernels._sq_dists``, without re-copying the rows on every call)."""
    d2 = x64 @ cand.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += (cand * cand).sum(axis=1)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def _fine_key(key: Sequence[int], coarse_index: int) -> tuple[int, ...]:
    return (*tuple(int(v) for v in key), _TAG_FINE, int(coarse_index))


def fine_gain_curve(points: np.ndarray, upper: int, seed: int, coarse_index: int,
                    distance: str = "l2") -> np.ndarray:
    """First pass of the gain allocation for one coarse cluster: the k-means++ potential
    after 1..``upper`` centres (float64, non-increasing), with the generator and trial
    count :func:`fine_init_group` uses, so its first ``a`` centres are the ones counted.

    ``points`` are the group's sample rows in point_id order, as stored. Cost
    O(upper * t * n * d).
    """
    x = prepare_points(points, distance)
    upper = int(upper)
    if upper == 0:
        return np.zeros(0, dtype=np.float64)
    return gain_run(x, upper, (seed,), coarse_index)[1]


def fine_init_group(points: np.ndarray, k: int, seed: int, coarse_index: int, distance: str = "l2",
                    n_iters: int = FINE_ITERS, *, upper: int | None = None, coarse_iters: int = COARSE_ITERS,
                    allocation: str = "gain") -> np.ndarray:
    """The fine step of one coarse cluster: ``k`` centroids of its points.

    Parameters
    ----------
    points : (n, d) the group's sample rows **in point_id order**, as stored (this
        function normalises them for cosine)
    k : the group's count, ``0 <= k <= n``
    seed, coarse_index : the generator is ``seeds.seeded_rng(seed, 0x2E1, coarse_index)``
    distance : ``l2`` or ``cosine``
    n_iters : Lloyd iterations after k-means++
    upper : length of the group's gain curve (:func:`fine_gain_curve`) when its count came
        from :func:`gain_allocation`; fixes the k-means++ trial count so the centres are
        the curve's first ``k``. ``None``: trials from ``k``, and a ``k`` above
        ``FINE_MAX_DIRECT`` is split again (two-level inside the group, with
        ``coarse_iters`` and ``allocation``).

    Returns
    -------
    (k, d) float32, unit rows for cosine. With fewer distinct points than ``k``, k-means++
    picks (repeated) rows once every distinct point is a centre, so the count is always
    exactly ``k``. Cost O(k t n d + n_iters n k d) for a direct group.
    """
    x = prepare_points(points, distance)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation: unknown value {allocation!r} (choose {' or '.join(ALLOCATIONS)})")
    return _fine(x, int(k), _fine_key((seed,), coarse_index), distance, n_iters, coarse_iters, allocation, 0,
                 None if upper is None else int(upper))


def _fine(x: np.ndarray, k: int, key: tuple[int, ...], distance: str, n_iters: int, coarse_iters: int,
          allocation: str, depth: int, upper: int | None = None) -> np.ndarray:
    n, d = x.shape
    if k < 0 or k > n:
        raise ValueError(f"a group of {n} points cannot have {k} centroids")
    if k == 0:
        return np.zeros((0, d), dtype=np.float32)
    if upper is None and k > FINE_MAX_DIRECT and depth < MAX_DEPTH:
        out = _two_level(x, k, key, distance, coarse_iters, n_iters, allocation, depth + 1, split_only=True)
        if out is not None:
            return out
    if upper is not None and not k <= upper <= n:
        raise ValueError(f"upper={upper} must be in [k={k}, n={n}]")
    idx, _ = _kmeans_pp(x, k, seeded_rng(*key), kpp_trials(upper if upper is not None else k))
    return _lloyd_from(x, x[idx], n_iters, distance)


def _lloyd_from(x: np.ndarray, init: np.ndarray, n_iters: int, distance: str) -> np.ndarray:
    """Lloyd iterations of one group (k-means++ init when it already has every point)."""
    if n_iters <= 0 or len(init) == len(x):
        return np.ascontiguousarray(init, dtype=np.float32)
    return _lloyd(x, init, n_iters, distance)


def _lloyd(x: np.ndarray, init: np.ndarray, n_iters: int, distance: str) -> np.ndarray:
    if len(x) * len(init) * x.shape[1] > SMALL_SEARCH_FLOPS:
        return kernels.lloyd(x, init, n_iters, distance).centroids
    with _one_faiss_thread():
        return kernels.lloyd(x, init, n_iters, distance).centroids


@contextmanager
def _one_faiss_thread():
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _two_level(x: np.ndarray, k: int, key: tuple[int, ...], distance: str, coarse_iters: int, fine_iters: int,
               allocation: str, depth: int, split_only: bool = False) -> np.ndarray | None:
    """Two-level init of prepared rows ``x`` (``key`` = ``(seed,)`` at the top level).
    ``None`` when ``split_only`` and the coarse step put every point in one group (the
    caller then runs k-means++ on the whole group)."""
    n = len(x)
    pos = subsample_positions(n, k, key)
    coarse = coarse_centroids(x[pos], k, key, distance, coarse_iters)
    labels = coarse_labels(x, coarse, distance)
    sizes = np.bincount(labels, minlength=len(coarse))
    if split_only and int(sizes.max()) == n:
        return None
    order = np.argsort(labels, kind="stable")  # groups keep the rows' (id) order
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    groups = [x[order[bounds[c]:bounds[c + 1]]] for c in range(len(coarse))]
    plan = fine_plan(sizes, k)
    if allocation == "size":
        alloc = plan.proportional
        runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    else:
        runs = {c: gain_run(groups[c], int(plan.upper[c]), key, c) for c in np.flatnonzero(plan.upper).tolist()}
        alloc = gain_allocation(plan, {c: r[1] for c, r in runs.items()}, k)
    parts = [group_centroids(groups[c], int(alloc[c]), key, c, plan, runs.get(c), distance, fine_iters, coarse_iters,
                             allocation, depth) for c in np.flatnonzero(alloc).tolist()]
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)


def gain_run(group: np.ndarray, upper: int, key: Sequence[int], coarse_index: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ of one coarse cluster's prepared rows up to ``upper`` centres: (row
    indices, potential after each centre). Its curve decides the allocation, its prefix is
    the group's init (:func:`group_centroids`)."""
    return _kmeans_pp(group, upper, seeded_rng(*_fine_key(key, coarse_index)), kpp_trials(upper))


def group_centroids(group: np.ndarray, count: int, key: Sequence[int], coarse_index: int, plan: FinePlan,
                    run: tuple[np.ndarray, np.ndarray] | None, distance: str, fine_iters: int, coarse_iters: int,
                    allocation: str, depth: int = 0) -> np.ndarray:
    """The fine step of coarse cluster ``coarse_index`` given its final ``count``: a split
    cluster (or any with ``allocation="size"``) runs its own fine k-means, a gain-allocated
    one starts Lloyd from the first ``count`` centres of its :func:`gain_run`. The same
    function whether the groups are processed in one process or spread over tasks."""
    if allocation == "size" or plan.split[coarse_index]:
        return _fine(group, count, _fine_key(key, coarse_index), distance, fine_iters, coarse_iters, allocation, depth)
    assert run is not None, f"coarse cluster {coarse_index}: gain allocation needs its k-means++ run"
    return _lloyd_from(group, group[run[0][:count]], fine_iters, distance)


# --------------------------------------------------------------------------- entry point


def two_level_init(sample: np.ndarray, k: int, seed: int, distance: str = "l2", coarse_iters: int = COARSE_ITERS,
                   fine_iters: int = FINE_ITERS, allocation: str = "gain") -> np.ndarray:
    """Exactly ``k`` initial centroids from an in-memory, id-ordered sample.

    About ``sqrt(k)`` coarse clusters (k-means++ on a sub-sample of at most 256 points per
    coarse cluster, then ``coarse_iters`` Lloyd iterations), then inside every coarse
    cluster a small k-means (k-means++ and ``fine_iters`` Lloyd iterations) with its
    count: by k-means++ gain (default) or proportional to size (``allocation="size"``).
    See the module notes for the cost (no O(k^2) step; O(n sqrt(k) d log k) for balanced
    coarse clusters) and determinism.

    Parameters
    ----------
    sample : (n, d) points in point_id order (as :func:`curation_spark.engine.kmeans.init_sample`
        returns them); for cosine they are L2-normalised here
    k : number of centroids, ``1 <= k <= n``
    seed : non-negative integer; the result depends only on (sample, k, seed, distance,
        iterations, allocation)

    Returns
    -------
    (k, d) float32 centroids (unit rows for cosine), ordered by coarse cluster then fine
    index. Distinct when the sample has at least ``k`` distinct points (unless Lloyd moves
    two centroids onto the same mean, which needs a degenerate sample).
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation: unknown value {allocation!r} (choose {' or '.join(ALLOCATIONS)})")
    sample = np.asarray(sample)
    if sample.ndim != 2:
        raise ValueError(f"sample must be a (n, d) array, got shape {sample.shape}")
    x = prepare_points(sample, distance)
    n = len(x)
    k = int(k)
    if k < 1 or k > n:
        raise ValueError(f"k must be in [1, {n}] (the sample size), got {k}")
    out = _two_level(x, k, (int(seed),), distance, coarse_iters, fine_iters, allocation, 0)
    assert out is not None and len(out) == k
    return out
