"""Small levels in one process (docs/architecture.md, "Small levels").

Upper levels and resampling samples hold thousands of points, yet on Spark each costs
dozens of small jobs. When a level's embeddings fit comfortably in the driver
(``clustering.in_process_max_mb``), :func:`cluster_level_in_memory` runs its k-means,
resampling steps and splits on one float32 block with the same kernels, seeds and rules
as the Spark path (:func:`curation_spark.curation.hierarchy.run_level`), so both write the same
tables up to float rounding.

Two conventions make the in-process choices equal Spark's:

* rows are in ascending ``point_id`` order, so a row's position stands in for its id in
  every tie-break (Spark's windows and samples order by ``point_id``);
* where Spark picks rows by hash (the k-means++ init sample, the ``r`` resampling order),
  the keys are ``xxhash64(point_id, seed)`` computed *by Spark* when the level is
  collected and passed in as ``keys[seed]``; Spark's hash is never re-implemented here.

Numeric only: no Spark.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from curation_spark.method import bounded_assign, centroid_index, kernels, lloyd, seeds
from curation_spark.method.lloyd import KMeansParams

#: A callback taking one Lloyd iteration's history entry (progress reporting).
OnIteration = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)

#: Up to this many multiply-adds per assignment (n x K x d), faiss runs on one thread: a
#: small search is over in a millisecond, and OpenMP threads that spin-wait for a core
#: taken by the Spark JVM (or a neighbour) made a 3,000-point level 20-50x slower
#: (0.08 s on one thread, 3-4 s on two, on the shared 2-core machine). Larger searches
#: (the toy's 29,700 x 1000 x 2) use all cores, as the Spark path's tasks would.
SINGLE_THREAD_MAX_WORK = 1 << 22


@contextlib.contextmanager
def faiss_threads(n_threads: int | None) -> Iterator[None]:
    """Run faiss with ``n_threads`` OpenMP threads (None: leave as is), restoring after."""
    if n_threads is None:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@functools.lru_cache(maxsize=1)
def _numpy_blas() -> tuple[Any, Any] | None:
    """(get, set) of the thread count of numpy's own OpenBLAS, or None if not found.

    numpy's wheels bundle OpenBLAS (``numpy.libs/libscipy_openblas64_*.so``) with its own
    thread pool, separate from faiss's BLAS and OpenMP threads; threadpoolctl reaches it the
    same way (its exported ``*_get/set_num_threads*`` functions)."""
    import ctypes

    root = os.path.dirname(os.path.dirname(np.__file__))
    names = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
             ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
             ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
             ("openblas_get_num_threads", "openblas_set_num_threads"))
    for folder in ("numpy.libs", os.path.join("numpy", ".dylibs")):
        for path in sorted(glob.glob(os.path.join(root, folder, "*openblas*"))):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for get_name, set_name in names:
                get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
                if get is not None and set_ is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    return get, set_
    return None


@contextlib.contextmanager
def numpy_blas_threads(n_threads: int | None) -> Iterator[None]:
    """Run numpy's BLAS (not faiss's) on ``n_threads`` threads (None: leave as is), restoring
    after; a no-op where numpy's OpenBLAS cannot be reached.

    The in-process levels make thousands of small numpy BLAS calls (a dot product per Lloyd
    iteration, a thin GEMM per k-means++ centre). OpenBLAS hands each to its thread pool,
    whose threads spin for a core: with the Spark JVM or a neighbour busy, a 30,000-element
    dot product took 1-5 ms on two threads instead of 20 us on one, and the toy's level 1
    ran 16 s instead of 23 s on one thread (shared 2-core machine). Results do not depend on
    it except for the last bits of a reported objective (a dot product's summation order).
    """
    blas = _numpy_blas() if n_threads is not None else None
    if blas is None:
        yield
        return
    get, set_ = blas
    before = int(get())
    set_(max(1, int(n_threads)))  # type: ignore[arg-type]  # None returned above
    try:
        yield
    finally:
        set_(before)


def threads_for(n_points: int, n_clusters: int, dim: int) -> int | None:
    """One thread for small searches, faiss's default (all cores) for large ones."""
    return 1 if n_points * n_clusters * dim <= SINGLE_THREAD_MAX_WORK else None


@dataclass(frozen=True)
class LevelPlan:
    """Everything one level does, resolved from the config by the caller.

    ``kmeans_params[0]`` is the level's k-means, ``kmeans_params[s]`` the fresh k-means of
    resampling step ``s`` (its ``n_clusters`` is lowered at run time if a sample holds
    fewer points, as on Spark). ``resampling_seeds[s - 1]`` seeds step ``s``'s ``r`` order.
    """

    level: int
    kmeans_params: tuple[KMeansParams, ...]
    sample_size: int
    strategy: str
    resampling_seeds: tuple[int, ...]
    n_splits: int
    split_iters: int
    split_seed: int

    @property
    def distance(self) -> str:
        return self.kmeans_params[0].distance

    @property
    def n_resampling_steps(self) -> int:
        return len(self.resampling_seeds)

    def hash_seeds(self, n_points: int, dim: int) -> list[int]:
        """The seeds whose ``xxhash64(point_id, seed)`` keys the level may need.

        Known before any clustering, so the caller gathers all keys in the same pass as the
        points. A resampling step's k-means needs its init-sample keys only if its sample
        can be larger than its init sample; that is bounded with the smallest init sample
        any K could give (clamping can only lower K), so no key is ever missing.
        """
        seeds = []
        if init_sample_size(self.kmeans_params[0], n_points, dim) < n_points:
            seeds.append(self.kmeans_params[0].seed)
        n_bound = min(n_points, self.kmeans_params[0].n_clusters * self.sample_size)
        for step in range(1, self.n_resampling_steps + 1):
            params = self.kmeans_params[step]
            if init_sample_size(replace(params, n_clusters=1), n_bound, dim) < n_bound:
                seeds.append(params.seed)
            if self.strategy == "r":
                seeds.append(self.resampling_seeds[step - 1])
        return sorted(set(seeds))


@dataclass
class KMeansRun:
    """One in-memory k-means: what :func:`curation_spark.engine.kmeans.fit` reports, with the
    assignment as arrays aligned with the input rows."""

    centroids: np.ndarray
    labels: np.ndarray
    dist: np.ndarray
    sizes: np.ndarray
    objective: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LevelResult:
    """A clustered level: per-row ``labels``/``dist`` (rows in id order), the centroids
    with their sizes, and the statistics the Spark path records in run.json."""

    labels: np.ndarray
    dist: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    objective: float
    kmeans: KMeansRun
    resampling: list[dict[str, Any]]
    split: dict[str, int] | None


# --------------------------------------------------------------------------- row choices


def init_sample_size(params: KMeansParams, n_total: int, dim: int) -> int:
    """Rows :func:`curation_spark.engine.kmeans.initial_centroids` asks ``init_sample`` for."""
    size = params.init_sample_size or lloyd.default_init_sample_size(params.n_clusters, n_total, dim)
    return max(size, params.n_clusters)


def init_sample_rows(n_rows: int, n_total: int, key: np.ndarray | None) -> np.ndarray:
    """Positions (ascending, i.e. id order) of the rows ``kmeans.init_sample`` gathers.

    All rows if ``n_rows >= n_total``; else the rows whose key is under the same cut as
    Spark's filter, ordered by key, the first ``n_rows`` (so fewer if fewer pass the cut).
    Equal keys (a 64-bit hash collision) are ordered by id here; Spark's ``orderBy`` leaves
    them in any order.
    """
    if n_rows >= n_total:
        return np.arange(n_total)
    if key is None:
        raise ValueError("init sample smaller than the points needs the hash keys")
    cut = lloyd.init_sample_cut(n_rows, n_total)  # the cut of kmeans.init_sample's filter
    below = np.flatnonzero(key <= np.int64(cut))
    order = np.lexsort((below, key[below]))  # by key, then id
    return np.sort(below[order[:n_rows]])


def first_per_cluster(labels: np.ndarray, order_key: np.ndarray, sample_size: int) -> np.ndarray:
    """Positions (ascending) of the first ``sample_size`` rows of every cluster, ordered
    by ``order_key`` then id: ``row_number() OVER (PARTITION BY cluster_id ORDER BY key,
    point_id) <= sample_size`` of :func:`curation_spark.curation.hierarchy.resampling_sample`."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), order_key, labels))
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.arange(n) - group_start
    return np.sort(order[rank < sample_size])


# --------------------------------------------------------------------------- k-means


class _RowKeys(Mapping[int, np.ndarray]):
    """The hash keys of a subset of rows, sliced on use (a step reads one or two seeds)."""

    def __init__(self, keys: Mapping[int, np.ndarray], rows: np.ndarray) -> None:
        self._keys, self._rows = keys, rows

    def __getitem__(self, seed: int) -> np.ndarray:
        return self._keys[seed][self._rows]

    def __contains__(self, seed: object) -> bool:
        return seed in self._keys

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _key(keys: Mapping[int, np.ndarray], seed: int, what: str) -> np.ndarray:
    if seed not in keys:
        raise KeyError(f"{what}: no xxhash64 keys for seed {seed} (LevelPlan.hash_seeds missed it)")
    return keys[seed]


#: numpy BLAS threads of the in-process levels (see :func:`numpy_blas_threads`).
NUMPY_BLAS_THREADS = 1


def fit_in_memory(x: np.ndarray, params: KMeansParams, keys: Mapping[int, np.ndarray],
                  stage: str = "k-means", on_iteration: OnIteration | None = None) -> KMeansRun:
    """k-means on an id-ordered block with :func:`curation_spark.engine.kmeans.fit`'s rules: init
    from the rows ``init_sample`` would gather (through ``lloyd.init_from_sample``), then
    the barrier engine's Lloyd loop (:func:`_lloyd`); numpy's BLAS on one thread.
    ``on_iteration``: called with each iteration's history entry (the driver's progress)."""
    with numpy_blas_threads(NUMPY_BLAS_THREADS):
        return _fit_in_memory(x, params, keys, stage, on_iteration)


def _fit_in_memory(x: np.ndarray, params: KMeansParams, keys: Mapping[int, np.ndarray], stage: str,
                   on_iteration: OnIteration | None = None) -> KMeansRun:
    started = time.perf_counter()
    n, dim = x.shape
    if n == 0:
        raise ValueError(f"{stage}: no points to cluster")
    k = params.n_clusters
    if k > n:
        k = lloyd.clamp_clusters(k, n, stage)
        params = replace(params, n_clusters=k)
    size = init_sample_size(params, n, dim)
    if size >= n:
        sample = x
    else:
        sample = x[init_sample_rows(size, n, _key(keys, params.seed, f"{stage} · init sample"))]
    c = lloyd.init_from_sample(sample, params)
    if len(c) != k:
        raise ValueError(f"{stage}: expected {k} initial centroids, got {len(c)}")
    c = np.ascontiguousarray(c, dtype=np.float32)
    with faiss_threads(threads_for(n, k, dim)):
        return _lloyd(x, c, params, stage, started, on_iteration)


def _lloyd(x: np.ndarray, c: np.ndarray, params: KMeansParams, stage: str, started: float,
           on_iteration: OnIteration | None = None) -> KMeansRun:
    """The barrier engine's loop with the whole level as its one block, through the
    engine's own block half (``lloyd.BlockLloyd``: exact or index-assisted assignment,
    sums kept across iterations): assign, sums, update (empty clusters keep their
    centroid), stop at ``n_iters``, zero shift or ``shift <= tol``; a last assignment
    gives labels, sizes and the objective
    (exact on every path: ``BlockLloyd.assign_final``).

    Not ``kernels.lloyd``: that records no per-iteration history (run.json needs it), and it
    re-normalises the init centroids for cosine, which the engine does not (they are rows
    of the already-normalised sample; normalising again can move a last bit).
    """
    k, dim = c.shape
    xw = kernels.normalize_rows(x) if params.distance == "cosine" else np.ascontiguousarray(x, dtype=np.float32)
    block = lloyd.BlockLloyd(xw, params, k)
    index_mode = lloyd.uses_index(params, k)
    history: list[dict[str, Any]] = []
    for it in range(1, params.n_iters + 1):
        t0 = time.perf_counter()
        idx, counts, sums, obj, timings = block.step(c)
        t1 = time.perf_counter()
        dense_sums = np.zeros((k, dim), dtype=np.float64)
        dense_counts = np.zeros(k, dtype=np.int64)
        dense_sums[idx], dense_counts[idx] = sums, counts
        new = kernels.update_centroids(dense_sums, dense_counts, c, params.distance)
        shift = kernels.centroid_shift(c, new)
        c = new
        entry: dict[str, Any] = {"iteration": it, "objective": obj, "shift": shift,
                                 "seconds": time.perf_counter() - t0,
                 "load_s": 0.0, "assign_s": timings[0], "sums_s": timings[1],
                 "exchange_s": time.perf_counter() - t1, "empty_clusters": int((dense_counts == 0).sum()),
                 "assignment": "index" if index_mode else "exact"}
        if not index_mode or timings[8]:  # the exact path ran
            entry["settled"] = lloyd.settled_shares(np.asarray(timings[5:8]))
        if index_mode:
            entry["agreement"] = float(timings[2] / max(1.0, timings[3]))
            entry["prior_blocks"] = int(timings[4])
            entry["exact_blocks"] = int(timings[8])
            entry["n_probes"] = block.index.n_probes  # type: ignore[union-attr]  # index_mode: it has one
        history.append(entry)
        lloyd.log_iteration(stage, entry)
        if on_iteration is not None:
            on_iteration(entry)
        if shift == 0.0 or (params.tol > 0 and shift <= params.tol):
            break
    labels, dist = block.assign_final(c)
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    return KMeansRun(c, labels, dist, sizes, kernels.objective_terms(dist, params.distance), history,
                     time.perf_counter() - started)


def reassign(x: np.ndarray, centroids: np.ndarray, distance: str, params: KMeansParams | None = None, *,
             x_normalised: bool = False, guess: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans.assign_points`` on a block, the one reassignment to fresh centroids both the
    driver-side levels and the barrier stage's resampling steps use: both sides normalised
    for cosine (the centroids again, as there, so the same float32 values are searched;
    ``x_normalised``: the block already is); exact (a bounded search started from ``guess``
    when given), or through the centroid index's probe path where ``params`` pick it for
    this K, as there."""
    c = kernels.normalize_rows(centroids) if distance == "cosine" else np.ascontiguousarray(centroids, np.float32)
    xw = kernels.normalize_rows(x) if distance == "cosine" and not x_normalised else x
    if params is None or not lloyd.uses_index(params, len(c)):
        if guess is not None:
            return bounded_assign.BoundedAssigner(xw, distance).assign(c, guess=guess)
        return kernels.assign(xw, c, distance)
    coarse = centroid_index.train_coarse(c, params.index_probes, distance, params.seed)
    return centroid_index.assign_fresh(xw, c, coarse, distance, params.index_probes, params.index_neighbours)


def split_in_memory(x: np.ndarray, labels: np.ndarray, n_splits: int, n_iters: int, seed: int,
                    distance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`curation_spark.curation.hierarchy.split_clusters` on a block: every non-empty cluster
    (its rows in id order) split by ``kernels.split_cluster`` with seed ``seeds.for_parent(seed, parent)``;
    dense ids ordered by parent, then sub-cluster.

    Returns (labels int32, dist float32, centroids, sizes int64).
    """
    order = np.argsort(labels, kind="stable")  # rows grouped by cluster, id order inside
    parents, starts = np.unique(labels[order], return_index=True)
    bounds = np.r_[starts, len(order)]
    new_labels = np.empty(len(labels), dtype=np.int32)
    new_dist = np.empty(len(labels), dtype=np.float32)
    cents, sizes = [], []
    offset = 0
    for j, parent in enumerate(parents):
        rows = order[bounds[j]:bounds[j + 1]]
        sub, dist, c = kernels.split_cluster(x[rows], n_splits, n_iters, seeds.for_parent(seed, int(parent)), distance)
        new_labels[rows] = offset + sub
        new_dist[rows] = dist
        cents.append(c)
        sizes.append(np.bincount(sub, minlength=len(c)))
        offset += len(c)
    dim = x.shape[1]
    centroids = np.concatenate(cents).astype(np.float32) if cents else np.zeros((0, dim), np.float32)
    return new_labels, new_dist, centroids, np.concatenate(sizes).astype(np.int64) if sizes else np.zeros(0, np.int64)


# --------------------------------------------------------------------------- a level


def cluster_level_in_memory(x: np.ndarray, keys: Mapping[int, np.ndarray], plan: LevelPlan,
                            stage: str | None = None, on_iteration: OnIteration | None = None) -> LevelResult:
    """Cluster one level held in memory: k-means, resampling steps, splits.

    Parameters
    ----------
    x
        The level's embeddings, float32 ``(n, d)``, rows in ascending ``point_id`` order.
    keys
        ``seed -> xxhash64(point_id, seed)`` (int64, aligned with ``x``) for every seed of
        ``plan.hash_seeds(n, d)``, computed by Spark.
    plan
        The level's parameters (built by the caller from the config, with the same
        ``KMeansParams`` and seeds as the Spark path).

    on_iteration
        Called with every Lloyd iteration's history entry, over the level's k-means and
        its resampling steps' (the driver's progress bar).

    numpy's BLAS runs on one thread meanwhile (:func:`numpy_blas_threads`).
    """
    with numpy_blas_threads(NUMPY_BLAS_THREADS):
        return _cluster_level(x, keys, plan, stage or f"level {plan.level}", on_iteration)


def _cluster_level(x: np.ndarray, keys: Mapping[int, np.ndarray], plan: LevelPlan, stage: str,
                   on_iteration: OnIteration | None = None) -> LevelResult:
    distance = plan.distance
    res = fit_in_memory(x, plan.kmeans_params[0], keys, stage, on_iteration)
    log.info("%s: k-means K=%d on %d points in-process, %d iterations: objective %.6g, sizes %s (%.1f s)", stage,
             len(res.centroids), len(x), len(res.history), res.objective, kernels.size_stats(res.sizes), res.seconds)
    centroids, labels, dist, sizes, objective = res.centroids, res.labels, res.dist, res.sizes, res.objective
    k = len(centroids)
    resampling = []
    for step in range(1, plan.n_resampling_steps + 1):
        t0 = time.perf_counter()
        substage = f"{stage} · resampling {step}"
        if plan.strategy == "c":
            order_key = dist
        else:
            order_key = _key(keys, plan.resampling_seeds[step - 1], substage)
        rows = first_per_cluster(labels, order_key, plan.sample_size)
        n_sample = len(rows)
        # A fresh k-means (new init) on the per-cluster sample, as on Spark.
        k = lloyd.clamp_clusters(k, n_sample, substage)
        step_res = fit_in_memory(x[rows], replace(plan.kmeans_params[step], n_clusters=k), _RowKeys(keys, rows),
                                 substage, on_iteration)
        centroids = step_res.centroids
        with faiss_threads(threads_for(len(x), k, x.shape[1])):
            labels, dist = reassign(x, centroids, distance, plan.kmeans_params[step])
        sizes = np.bincount(labels, minlength=k).astype(np.int64)
        objective = kernels.objective_terms(dist, distance)
        entry = {"step": step, "sample_points": n_sample, "objective": objective,
                 "sizes": kernels.size_stats(sizes), "seconds": time.perf_counter() - t0}
        resampling.append(entry)
        log.info("%s · resampling step %d: sample %d points, objective %.6g, sizes %s (%.1f s)", stage, step,
                 n_sample, objective, entry["sizes"], entry["seconds"])
    split = None
    if plan.n_splits > 1:
        with faiss_threads(1):  # many small k-means, one per cluster
            labels, dist, centroids, sizes = split_in_memory(x, labels, plan.n_splits, plan.split_iters,
                                                             plan.split_seed, distance)
        objective = kernels.objective_terms(dist, distance)
        split = {"n_splits": plan.n_splits, "n_clusters": int(len(sizes))}
    return LevelResult(labels.astype(np.int32), dist.astype(np.float32), centroids, sizes, float(objective), res,
                       resampling, split)
