"""The numeric rules of one k-means, shared by the Spark engine and the in-process path.

What a k-means needs (:class:`KMeansParams`), how its init is chosen and computed from an
in-memory sample, how many clusters a level can have, and one block's side of a Lloyd
iteration (:class:`BlockLloyd`). numpy/faiss only: the barrier stage of
:mod:`curation_spark.engine.kmeans` and the driver-side levels of
:mod:`curation_spark.method.inprocess` both call these, so both follow the same rules bit
for bit.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation_spark.config import ClusteringConfig
from curation_spark.method import bounded_assign, candidate_search, centroid_index, kernels, reduce
from curation_spark.method.seeds import seeded_rng

log = logging.getLogger("curation_spark.engine.kmeans")  # the engine's logger: one place to turn iterations on

#: The ``clustering`` section's defaults: the one source of KMeansParams' defaults too.
_CLUSTERING_DEFAULTS = ClusteringConfig()


#: Largest sample gathered to the driver for k-means++ (bytes of float32 embeddings).
INIT_SAMPLE_MAX_BYTES = 256 * 1024 * 1024


#: ``init: auto`` uses the two-level init from this many clusters on (bench/init_bench.py).
TWO_LEVEL_MIN_CLUSTERS = 2048


#: Points per cluster in the default k-means++ sample.
INIT_SAMPLE_PER_CLUSTER = 20


@dataclass(frozen=True)
class KMeansParams:
    """What one k-means run needs; see ``clustering`` in the config for meanings (and
    for the defaults, which are that section's)."""

    n_clusters: int
    n_iters: int
    #: Resolved (``l2`` or ``cosine``): ``clustering.distance: auto`` is decided from the input first.
    distance: str = "l2"
    init: str = _CLUSTERING_DEFAULTS.init
    seed: int = _CLUSTERING_DEFAULTS.seed
    tol: float = _CLUSTERING_DEFAULTS.tol
    init_sample_size: int | None = _CLUSTERING_DEFAULTS.init_sample_size
    engine: str = _CLUSTERING_DEFAULTS.engine
    num_partitions: int | None = _CLUSTERING_DEFAULTS.num_partitions
    assignment: str = _CLUSTERING_DEFAULTS.assignment
    index_min_clusters: int = _CLUSTERING_DEFAULTS.index_min_clusters
    index_neighbours: int = _CLUSTERING_DEFAULTS.index_neighbours
    index_probes: int = _CLUSTERING_DEFAULTS.index_probes

    def __post_init__(self) -> None:
        # ``clustering.distance: auto`` is resolved from the input before any k-means runs;
        # an unresolved value here would silently cluster by l2.
        if self.distance not in ("l2", "cosine"):
            raise ValueError(f"KMeansParams.distance: {self.distance!r} (resolve 'auto' first; l2 or cosine)")


def init_sample_cut(n_rows: int, n_total: int) -> int:
    """The ``xxhash64`` cut of the init sample: rows with a key at most this are the
    candidates, about twice the ``n_rows`` wanted (the ``n_rows`` smallest are kept)."""
    threshold_fraction = min(1.0, 2.0 * n_rows / n_total + 1e-3)
    return min(int(-(2 ** 63) + threshold_fraction * (2 ** 64 - 1)), 2 ** 63 - 1)


def default_init_sample_size(n_clusters: int, n_total: int, dim: int) -> int:
    """k-means++ sample bound: 20 points per cluster (at least 10,000), at most 256 MB."""
    wanted = max(INIT_SAMPLE_PER_CLUSTER * n_clusters, 10_000)
    return int(min(n_total, wanted, max(n_clusters, INIT_SAMPLE_MAX_BYTES // (4 * dim))))


def init_method(params: KMeansParams) -> str:
    """The init a k-means uses: ``auto`` is k-means++ up to ``TWO_LEVEL_MIN_CLUSTERS``
    clusters (where it is affordable and as good), two-level init above."""
    if params.init != "auto":
        return params.init
    return "two_level" if params.n_clusters >= TWO_LEVEL_MIN_CLUSTERS else "kmeans++"


def init_from_sample(sample: np.ndarray, params: KMeansParams) -> np.ndarray:
    """The initial centroids from an (id-ordered) in-memory sample: the numeric half of
    :func:`initial_centroids`, shared with the in-process path for small levels."""
    k = min(params.n_clusters, len(sample))
    method = init_method(params)
    if method == "two_level":  # normalises itself (twice would change bits vs the Spark path)
        from curation_spark.method.seeding import two_level_init

        return two_level_init(sample, k, params.seed, params.distance)
    if params.distance == "cosine":
        sample = kernels.normalize_rows(sample)
    rng = seeded_rng(params.seed, 0x5EED)
    if method == "random":
        return kernels.random_init(sample, k, rng)
    return kernels.kmeans_plus_plus(sample, k, rng)


def uses_index(params: KMeansParams, k: int) -> bool:
    """Whether this k-means assigns through the centroid index (``assignment: auto`` picks
    it from ``index_min_clusters`` clusters on; see docs/architecture.md, "Assignment")."""
    return params.assignment == "index" or (params.assignment == "auto" and k >= params.index_min_clusters)


class BlockLloyd:
    """One block's side of the Lloyd iterations (numpy/faiss only): assignment (exact with
    the bounds of :class:`~curation_spark.method.bounded_assign.BoundedAssigner`, or through
    :class:`~curation_spark.method.centroid_index.IndexAssigner` for large K, which under
    ``assignment: auto`` also holds the exact path and takes whichever it measured cheaper)
    and sparse partial sums kept across iterations (:class:`~curation_spark.method.kernels.BlockSums`)."""

    def __init__(self, x: np.ndarray, params: KMeansParams, k: int, group: reduce.Collective | None = None) -> None:
        self.x = x
        self.group = group
        self.distance = params.distance
        self.seed = params.seed
        self.sums = kernels.BlockSums(x, k)
        index = uses_index(params, k)
        # The exact path: the only one below the index's K, a fallback of the index under ``auto``.
        self.exact = (bounded_assign.BoundedAssigner(x, params.distance)
                      if not index or params.assignment == "auto" else None)
        self.index = (centroid_index.IndexAssigner(x, params.distance, params.index_probes, params.index_neighbours,
                                                   exact=self.exact.assign if self.exact is not None else None,
                                                   exact_cost=self.exact.modelled_cost if self.exact is not None
                                                   else None)
                      if index else None)
        self.last_stats: centroid_index.AssignStats | None = None

    def assign(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and exact distances to the given centroids."""
        if self.index is None:
            assert self.exact is not None
            return self.exact.assign(centroids)
        shared = None
        if self.group is not None:  # split the per-centroid work over the stage's tasks
            shared = centroid_index.SharedWork(self.group.rank, self.group.size, self.group.all_gather)
        labels, dist, self.last_stats = self.index.assign(centroids, self.seed, shared)
        if dist is None:
            dist = candidate_search.exact_distances(self.x, centroids, labels, self.distance)
        return labels, dist

    def assign_final(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The assignment a k-means stores: exact on every path. The index path's labels
        agree with exact search on >= 99% of the points during the iterations, which is
        enough for the centroids but not for the stored clusters: its last labels only
        start the bounded exact search (its bound and candidate tests certify what they
        can; the rest is searched in full, which on overlapping high-dimensional data is
        most of the points: about one exact search)."""
        if self.index is None:
            assert self.exact is not None
            return self.exact.assign(centroids)
        exact = self.exact if self.exact is not None else bounded_assign.BoundedAssigner(self.x, self.distance)
        return exact.assign(centroids, guess=self.index.previous)

    def step(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, list[float]]:
        """Assign, then this block's sparse partial sums: (idx, counts, sums, objective, [assign
        seconds, sums seconds, agreement hits, agreement rows, prior path used, rows settled by
        the bound, by the candidates, by a full search, exact path used (index mode)])."""
        t0 = time.perf_counter()
        labels, dist = self.assign(centroids)
        t1 = time.perf_counter()
        idx, counts, sums = self.sums.update(labels)
        obj = kernels.objective_terms(dist, self.distance)
        t2 = time.perf_counter()
        st = self.last_stats
        path = st.path if st is not None else "exact"
        settled = self.exact.counts if path == "exact" and self.exact is not None else bounded_assign.AssignCounts()
        hits, checked = (st.agreement_hits, st.agreement_rows) if st is not None else (0, 0)
        index_exact = st is not None and path == "exact"
        return idx, counts, sums, obj, [t1 - t0, t2 - t1, float(hits), float(checked), float(path == "prior"),
                                        float(settled.by_bound), float(settled.by_candidates), float(settled.searched),
                                        float(index_exact)]


def settled_shares(counts: np.ndarray) -> dict[str, float]:
    """Shares of the points that exact assignment settled by the bound, by the candidate
    test and by a full search (:class:`~curation_spark.method.bounded_assign.BoundedAssigner`)."""
    total = max(1.0, float(np.sum(counts)))
    return {name: round(float(v) / total, 6) for name, v in zip(("bound", "candidates", "searched"), counts,
                                                                  strict=True)}


def log_iteration(stage: str, entry: dict[str, Any]) -> None:
    # One line per iteration of every k-means (dozens per level) drowns the log: DEBUG
    # (--debug); the live progress bar and one summary line per k-means are at INFO.
    level = logging.DEBUG
    settled = entry.get("settled")
    searched = f", searched {100 * settled['searched']:.1f}% of points" if settled else ""
    log.log(level, "%s · iteration %d: objective=%.6g shift=%.3g seconds=%.2f "
            "(assign %.2f, sums %.2f, exchange %.2f%s)",
             stage, entry["iteration"], entry["objective"], entry["shift"], entry["seconds"],
             entry["assign_s"], entry["sums_s"], entry["exchange_s"], searched)


def clamp_clusters(requested: int, available: int, stage: str) -> int:
    """K larger than the points available is clamped with a warning (as the reference does)."""
    if requested > available:
        log.warning("%s: n_clusters=%d is more than the %d points available; using %d clusters", stage, requested,
                    available, available)
        return available
    return requested
