"""Index-assisted nearest-centroid assignment for large K (numpy/faiss only, no Spark).

Exact assignment costs N x K x D per Lloyd iteration: at K = 100,000 that is minutes per
iteration per core. Two cheaper ways to find (almost always) the same centroid, both made
of ordinary GEMMs so they run at BLAS speed:

``probe`` (needs no history)
    An inverted file over the centroids: a coarse quantizer of m ~ sqrt(P K) centres (a
    small k-means over the centroids, trained once per k-means) puts every centroid in one
    list; a point goes to its nearest coarse centre q and is compared with the centroids
    of the P = ``n_probes`` lists nearest to q. Points with the same q share their
    candidates, so it is one GEMM per list: N x (m + P K / m) x D instead of N x K x D.
    (faiss's ``IndexIVFFlat``, which probes the lists nearest to each point, was measured
    slower than exact search at K = 1,000: its list scans are not BLAS.)
``prior`` (needs the previous iteration's labels)
    After the first iterations a point's nearest centroid is almost always among the L
    nearest centroids of its previous centroid (a neighbour graph over the centroids,
    itself found with the probe search). Points with the same previous cluster share
    their candidates: one GEMM per previous cluster, N x L x D, not growing with K.

Neither is exact. The engine checks a fixed sample of each block against exact search
every iteration, before searching the block, and takes the cheapest width of the prior
path, else the narrowest probe count, whose sampled agreement is on target
(:class:`IndexAssigner`). With
``assignment: auto`` it also holds the exact path (the bounded exact search of
:mod:`curation_spark.method.bounded_assign`) and never takes an index path that costs
more than exact search. The
costs are *counted* (rows x candidates x D, groups of rows, searched rows; the
``COST_*`` seconds per unit measured by ``bench/assign_cost_bench.py``), not timed, so the
path taken, and so the clusters, depend on the data, the config and faiss's thread count
(the flat search's cost is divided by it), never on how busy the machine is. The distance
recorded for a point is always its exact distance to the centroid it got
(:func:`exact_distances`).

Conventions as in :mod:`curation_spark.method.kernels`: float32 C-contiguous arrays; for
``cosine`` both sides are L2-normalised, the search maximises the inner product and the
reported distance is ``1 - cos``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from curation_spark.method.candidate_search import (
    exact_distances,
    flat_index,
    nearest,
    search_fixed,
    search_groups,
    squared_norms,
)
from curation_spark.method.reduce import owner_bounds
from curation_spark.method.row_threads import faiss_threads
from curation_spark.method.sample_checks import (
    SampleCheck,
    SampleChecks,
    agreement_rows,
    allowed_misses,
    sample_shift,
)

#: Agreement with exact search the index path keeps (measured on a sample every iteration).
TARGET_AGREEMENT = 0.99
#: The prior path's neighbour lists never grow beyond this.
MAX_NEIGHBOURS = 1024
#: Shares of a block's rows the prior path may search exactly instead: those farthest from
#: their previous centroid (they are the ones whose new nearest centroid lies outside its
#: neighbourhood: at K = 20,000, N/K = 20, the second iteration's prior at 1,024 neighbours
#: agrees on 0.946 of the points, and on 0.988 / 0.998 with the farthest 10 % / 20 % searched
#: exactly).
RESCUE_SHARES = (0.05, 0.1, 0.2, 0.3)
#: The graph (K x L int32) is kept across iterations up to this many bytes; a wider one is
#: built and searched one slice of centroids at a time and not kept (K = 100,000 at
#: L = 1,024 is 400 MB).
GRAPH_MAX_BYTES = 256 << 20
#: Under ``auto`` an index path is taken only where its modelled cost is at most this share
#: of exact search's: the model's error is of this order (the grouped searches' thread
#: speed-up, their GEMMs' efficiency), and near parity exact search is worth its exactness.
INDEX_MARGIN = 0.8
#: The probe path never probes more lists than this.
MAX_PROBES = 1024
#: An option whose first check misses at most this multiple of what the target allows is
#: checked again on the wider samples (an option at the 0.99 target misses 10.2 of 1,024 rows
#: on average and more than 20 in 0.4 % of checks) ...
WIDE_CHECK_REACH = 2.0
#: ... where its modelled saving over what would run otherwise is at least this multiple of
#: the wider check's own modelled cost (the option may miss there too; at N/K = 200, K = 500
#: the check cost more than the prior would have saved).
WIDE_CHECK_PAYOFF = 3.0


def n_lists_for(n_clusters: int, n_probes: int) -> int:
    """Coarse lists for K centroids: sqrt(n_probes K) balances the coarse search (N m D)
    against the probed lists (N n_probes K/m D)."""
    return max(1, min(n_clusters, int(round(math.sqrt(max(1, n_probes) * n_clusters)))))


def train_coarse(centroids: np.ndarray, n_probes: int, distance: str = "l2", seed: int = 0) -> np.ndarray:
    """Coarse centres (m x D): a small seeded k-means over the centroids. Trained once per
    k-means and reused while the centroids move (their lists are recomputed each time)."""
    import faiss

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    k, d = c.shape
    m = n_lists_for(k, n_probes)
    if m == 1:
        return c.astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)
    km = faiss.Clustering(d, m)
    km.niter = 10
    km.seed = int(seed) % (2 ** 31)
    km.max_points_per_centroid = 64
    km.min_points_per_centroid = 1  # few centroids per list is expected here: no warning
    km.spherical = distance == "cosine"
    km.verbose = False
    km.train(c, flat_index(d, distance))
    return faiss.vector_float_to_array(km.centroids).reshape(m, d).copy()


@dataclass
class CoarseLists:
    """The inverted file over the current centroids: the coarse list of every centroid,
    and for every list the ``n_probes`` lists nearest to it. Rebuilt whenever the
    centroids move (K x m distances: cheap next to any search)."""

    coarse: np.ndarray
    list_of: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    #: For every list its nearest lists, nearest first (as many as the widest probe tried).
    near_lists: np.ndarray
    distance: str
    #: Lists probed from a list: the first ``probes`` of its ``near_lists``.
    probes: int = 0

    def with_probes(self, probes: int) -> CoarseLists:
        """The same lists probed ``probes`` wide (no copy of the arrays)."""
        return replace(self, probes=min(int(probes), self.near_lists.shape[1]))

    @classmethod
    def build(cls, centroids: np.ndarray, coarse: np.ndarray, n_probes: int, distance: str = "l2",
              list_of: np.ndarray | None = None) -> CoarseLists:
        """``list_of`` (each centroid's nearest coarse centre) may be computed by the caller,
        e.g. split over the tasks of a barrier stage."""
        m = len(coarse)
        if list_of is None:
            list_of = nearest(centroids, coarse, distance)[:, 0]
        order = np.argsort(list_of, kind="stable")
        offsets = np.searchsorted(list_of[order], np.arange(m + 1))
        near = nearest(coarse, coarse, distance, k=min(m, max(1, n_probes)))
        return cls(coarse, list_of, order, offsets, near, distance, near.shape[1])

    def candidates(self, q: int) -> np.ndarray:
        """Centroid ids in the lists probed from coarse list ``q`` (sorted)."""
        return np.sort(np.concatenate([self.order[self.offsets[r]:self.offsets[r + 1]]
                                       for r in self.near_lists[q, :self.probes]]))

    def start(self, x: np.ndarray) -> np.ndarray:
        """Nearest coarse list of each row."""
        return nearest(x, self.coarse, self.distance)[:, 0]


def neighbour_graph(lists: CoarseLists, centroids: np.ndarray, rows: np.ndarray, n_neighbours: int,
                    ordered: bool = True) -> np.ndarray:
    """Approximate ``n_neighbours`` nearest centroids of centroids ``rows`` (itself always
    included), found with the probe search: (len(rows), L) int32, nearest first when
    ``ordered`` (then every prefix is a narrower graph), else in no order (the graph of
    all K the prior path keeps across iterations: sorting it would cost ~3x its search)."""
    rows = np.asarray(rows, dtype=np.int64)
    c_sq = squared_norms(centroids) if lists.distance == "l2" else None
    graph = search_groups(centroids[rows], centroids, c_sq, lists.list_of[rows], lists.candidates, lists.distance,
                          k=min(n_neighbours, len(centroids)), ordered=ordered)
    own = rows[:, None]
    missing = ~(graph == own).any(axis=1)
    graph[missing, -1] = rows[missing]  # its own centre is always a candidate
    return graph.astype(np.int32)


def rescued_rows(rows: int, share: float) -> int:
    """Rows of ``rows`` the prior path searches exactly at ``share`` (at least one)."""
    return min(rows, max(1, math.ceil(share * rows)))


def farthest_rows(away: np.ndarray, share: float) -> np.ndarray:
    """The :func:`rescued_rows` of ``share`` with the largest ``away`` (their distance to
    their previous centroid), in no order: the rows the prior path searches exactly, on a
    check as on the block."""
    rescued = rescued_rows(len(away), share)
    return np.argpartition(-away, rescued - 1)[:rescued] if rescued < len(away) else np.arange(len(away))


class SharedWork:
    """Per-centroid work split over cooperating blocks (the tasks of a barrier stage): each
    computes the rows of its own cluster range and the parts are all-gathered, so the
    K x m x D listing and the K x (m + P K / m) x D graph are divided by the task count
    instead of repeated by every task. ``all_gather(bytes) -> list[bytes]`` in rank order."""

    def __init__(self, rank: int, size: int, all_gather: Callable[[bytes], list]) -> None:
        self.rank, self.size, self.all_gather = rank, size, all_gather

    def _own(self, k: int) -> np.ndarray:
        bounds = owner_bounds(k, self.size)  # the same ranges as the reduce-scatter's owners
        return np.arange(bounds[self.rank], bounds[self.rank + 1])

    def _gather(self, part: np.ndarray, width: int) -> np.ndarray:
        pieces = self.all_gather(np.ascontiguousarray(part, dtype=np.int32).tobytes())
        return np.concatenate([np.frombuffer(p, dtype=np.int32).reshape(-1, width) for p in pieces])

    def total(self, values: list[float]) -> np.ndarray:
        """Element-wise sum of small float vectors over all blocks (same on every block)."""
        pieces = self.all_gather(np.asarray(values, dtype=np.float64).tobytes())
        return np.sum([np.frombuffer(p, dtype=np.float64) for p in pieces], axis=0)

    def largest(self, value: float) -> float:
        """The largest of a value over all blocks (same on every block)."""
        pieces = self.all_gather(np.asarray([value], dtype=np.float64).tobytes())
        return float(max(np.frombuffer(p, dtype=np.float64)[0] for p in pieces))

    def list_ids(self, centroids: np.ndarray, coarse: np.ndarray, distance: str) -> np.ndarray:
        rows = self._own(len(centroids))
        return self._gather(nearest(centroids[rows], coarse, distance)[:, :1], 1)[:, 0]

    def graph(self, lists: CoarseLists, centroids: np.ndarray, n_neighbours: int) -> np.ndarray:
        return self.graph_of(lists, centroids, n_neighbours, np.arange(len(centroids)))

    def graph_of(self, lists: CoarseLists, centroids: np.ndarray, n_neighbours: int,
                 anchors: np.ndarray) -> np.ndarray:
        """The neighbour graph of centroids ``anchors``, each block searching its share."""
        rows = anchors[self._own(len(anchors))]
        return self._gather(neighbour_graph(lists, centroids, rows, n_neighbours, ordered=False),
                            min(n_neighbours, len(centroids)))


@dataclass
class AssignStats:
    """What one index assignment of a block did, for the iteration log (``path``: ``probe``,
    ``prior`` or ``exact``)."""

    path: str
    agreement_hits: int
    agreement_rows: int
    n_probes: int
    n_neighbours: int


@dataclass
class PathOption:
    """One way to search a block, decided on the sample checks before the block is searched.
    ``setting``: (width, graph probes or None for the kept graph, share of rows searched
    exactly) for ``prior``, (probes,) for ``probe``; ``cost`` and ``wide_cost``: modelled
    seconds of searching the block with it and of evaluating it on the wide check (summed
    over the blocks that decide together); ``evaluate``: its hits on a check's rows."""

    path: str
    setting: tuple
    cost: float
    wide_cost: float
    evaluate: Callable[[SampleCheck], int]


@dataclass
class Decision:
    """The option taken (None: none on target) and the sample hits and rows that decided it."""

    option: PathOption | None
    hits: int
    rows: int


#: An exact assigner for the fallback path: centroids -> (labels, exact distances).
ExactPath = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


#: The cost model's seconds per unit on one thread (``bench/assign_cost_bench.py``): faiss's
#: flat search per row x centroid x dim; :func:`search_groups` per row x candidate x dim
#: (its GEMMs), per row x candidate (ranking the scores), per candidate x dim of a group
#: (gathering the group's centroids) and per group of rows.
COST_FLAT_MAC = 27.6e-12
#: The exact path's full search (two nearest, for the bounds) per row x centroid x dim.
COST_EXACT_MAC = 36e-12
COST_GROUP_MAC = 18e-12
COST_GROUP_SCORE = 0.52e-9
COST_GROUP_GATHER = 0.97e-9
COST_GROUP = 8.4e-6
#: The neighbour graph's probe search per centroid x candidate beyond its GEMM (the
#: partition of every candidate list), and per neighbour kept (measured at K = 20,000,
#: 128 probes: 0.52 s at width 128, 0.6-0.8 s at 1,024).
COST_GRAPH_PARTITION = 7e-9
COST_GRAPH_SELECT = 10e-9
#: :func:`search_fixed` per row x candidate x dim (the batched GEMM with its gathers) and per row.
COST_FIXED_MAC = 30e-12
COST_FIXED_ROW = 0.12e-6
#: The rows x D of the exact distances to the previous centroids that rank the rows a
#: rescue share searches exactly (measured 0.8-0.9 ns at N = 400,000, D = 64).
COST_RESCUE_RANK = 0.9e-9


def flat_cost(rows: float, k: int, dim: int, threads: int = 1) -> float:
    """Modelled seconds of an exact flat search of ``rows`` rows among ``k`` centres."""
    return rows * k * dim * COST_FLAT_MAC / max(1, threads)


#: What each thread beyond the first adds to :func:`search_groups` (Python threads share
#: the GIL between GEMMs: 5.3 -> 3.3 s on 2 threads at K = 20,000; 1.6x on 2 at K = 500).
GROUPED_THREAD_GAIN = 0.6


def grouped_speedup(threads: int) -> float:
    """Modelled speed-up of :func:`search_groups` on ``threads`` threads."""
    return 1.0 + GROUPED_THREAD_GAIN * (max(1, threads) - 1)


class IndexAssigner:
    """Index-assisted assignment of one block across Lloyd iterations.

    Keeps the block's previous labels (the prior), the coarse quantizer, the neighbour
    graph and the last probe count. Each :meth:`assign` checks the paths on a fixed sample
    of the block against exact search *before* searching the block: the prior path at each
    neighbour-list width (and with the kept graph), cheapest first, and if none is on
    target (a margin below the target for the sample's noise) the probe path at each probe
    count from ``index_probes`` doubled, narrowest first; options cheaper than the one found
    that missed narrowly are checked again on a wider sample where the saving pays for that
    check (:meth:`_first_on_target`). The block is then searched once, on the option taken,
    so every call meets the target, the first one included.

    With ``exact`` (``assignment: auto``), exact search is a path too: no option costing
    more than ``INDEX_MARGIN`` (0.8) of exact search is tried, by the counted cost model
    (``COST_*``); when none cheaper is on target, exact search runs. Exact search is
    costed as a full search of the rows the bounded search's tests left on its last call,
    plus the tests themselves (``BoundedAssigner.modelled_cost``). Without it
    (``assignment: index``) the widest probe is taken when none is on target.
    """

    def __init__(self, x: np.ndarray, distance: str, n_probes: int, n_neighbours: int,
                 target: float = TARGET_AGREEMENT, coarse: np.ndarray | None = None,
                 exact: ExactPath | None = None, exact_cost: Callable[[int], float] | None = None) -> None:
        self.x = x
        self.distance = distance
        self.n_probes = int(n_probes)
        self.n_neighbours = int(n_neighbours)
        #: The narrowest neighbour list the prior path tries (``clustering.index_neighbours``).
        self.base_neighbours = int(n_neighbours)
        #: The neighbour graph of the last prior path (K x width int32), kept across calls.
        self.graph: np.ndarray | None = None
        self.target = target
        self.sample = agreement_rows(len(x))
        #: Calls so far (each call's samples start elsewhere: :func:`sample_shift`).
        self.calls = 0
        self.previous: np.ndarray | None = None
        self.coarse = coarse
        self.exact = exact
        #: The exact path's modelled seconds for K centroids (default: a full flat search for
        #: two neighbours; the bounded search models its own from its last call).
        self.exact_cost = exact_cost or (lambda k: flat_cost(len(x), k, x.shape[1], faiss_threads())
                                         * COST_EXACT_MAC / COST_FLAT_MAC)
        #: The narrowest probe count the probe path tries (``clustering.index_probes``).
        self.base_probes = int(n_probes)

    @staticmethod
    def _total(shared: SharedWork | None, *values: float) -> list[float]:
        """``values`` summed over all blocks when they decide together (else as they are)."""
        if shared is None:
            return [float(v) for v in values]
        return [float(v) for v in shared.total(list(values))]

    def _probe_cost(self, lists: CoarseLists, n_probes: int, starts: np.ndarray, rows: int | None = None) -> float:
        """The probe path at ``n_probes`` over ``rows`` rows (default: the block): the coarse
        search of every row, the row x candidate pairs (the sample's coarse lists scaled to
        the rows; the candidates of a list grow about proportionally to the probes) and the
        lists' gathers (every list, once there are more rows than lists). ``starts``: the
        sample's coarse lists."""
        dim = self.x.shape[1]
        n = len(self.x) if rows is None else rows
        m = len(lists.offsets) - 1
        sizes = np.diff(lists.offsets)
        per_list = sizes[lists.near_lists[:, :n_probes]].sum(axis=1)
        pairs = float(per_list[starts].sum()) * n / max(1, len(self.sample))
        touched = min(1.0, n / max(1, m))
        grouped = (pairs * (dim * COST_GROUP_MAC + COST_GROUP_SCORE)
                   + touched * (float(per_list.sum()) * dim * COST_GROUP_GATHER + m * COST_GROUP))
        return flat_cost(n, m, dim, faiss_threads()) + grouped / grouped_speedup(faiss_threads())

    @staticmethod
    def _graph_pairs(lists: CoarseLists) -> float:
        """Candidates per centroid of a probe search of the centroids at ``lists.probes``."""
        per_list = np.diff(lists.offsets)[lists.near_lists[:, :lists.probes]].sum(axis=1)
        return float(per_list[lists.list_of].sum()) / max(1, len(lists.list_of))

    def _graph_cost(self, pairs_per_centroid: float, anchors: float, width: int) -> float:
        """A probe search of ``anchors`` centroids (``pairs_per_centroid`` candidates each,
        :meth:`_graph_pairs`) for ``width`` neighbours each."""
        return anchors * (pairs_per_centroid * (self.x.shape[1] * COST_GROUP_MAC + COST_GRAPH_PARTITION)
                          + width * COST_GRAPH_SELECT)

    def _fixed_cost(self, rows: int, width: int) -> float:
        """:func:`search_fixed` of ``rows`` rows among ``width`` candidates each."""
        return rows * (COST_FIXED_ROW + width * (self.x.shape[1] * COST_FIXED_MAC + COST_GROUP_SCORE))

    def _prior_cost(self, width: int, k: int, graph_pairs: float | None, tasks: int) -> float:
        """The prior path: :func:`search_fixed` of every row among ``width`` candidates, and
        this block's share of the neighbour graph when it is (re)built (``graph_pairs`` not
        None: a probe search of the ``k`` centroids for ``width`` neighbours each, split over
        ``tasks`` blocks)."""
        search = self._fixed_cost(len(self.x), width)
        if graph_pairs is None:
            return search
        return self._graph_cost(graph_pairs, k / max(1, tasks), width) + search

    def _rescue_cost(self, rows: int, k: int, share: float) -> float:
        """The prior path's exact search of ``share`` of ``rows`` rows (ranked by their
        distance to the previous centroid) among all ``k`` centroids."""
        if share <= 0.0:
            return 0.0
        dim = self.x.shape[1]
        return rows * dim * COST_RESCUE_RANK + flat_cost(share * rows, k, dim, faiss_threads())

    def _widths(self, k: int) -> list[int]:
        """The neighbour-list widths the sample tries: the configured one, doubled up to the
        widest allowed (``MAX_NEIGHBOURS``, K)."""
        widest = max(1, min(MAX_NEIGHBOURS, k))
        widths = [min(self.base_neighbours, widest)]
        while widths[-1] < widest:
            widths.append(min(widest, widths[-1] * 2))
        return widths

    def _first_on_target(self, groups: Iterable[Iterable[PathOption]], checks: SampleChecks,
                         fallback_cost: float, shared: SharedWork | None) -> Decision:
        """The option to search the block with, decided on the sample checks.

        First the groups' options in order on this call's sample, up to the first on target.
        Then, cheapest first, the options tried there that are cheaper than what would run
        otherwise (the option found, else ``fallback_cost``: exact search) and were left
        within reach (at most ``WIDE_CHECK_REACH`` times the misses the target allows), each
        again on the wider checks in turn (their smaller standard error lets a path at 0.991
        through that 1,024 rows cannot tell from 0.99) while it stays in reach and the
        modelled saving is at least ``WIDE_CHECK_PAYOFF`` times the check's own modelled
        cost. Groups and options are consumed lazily (a caller's generator may end where its
        options get too dear).
        With ``shared`` all blocks decide together (misses, rows and costs summed)."""
        small = checks.small
        tried: list[tuple[PathOption, float]] = []
        hits, rows = 0, len(small.rows)
        found: Decision | None = None
        for group in groups:
            for option in group:
                hits = option.evaluate(small)
                misses, total = self._total(shared, rows - hits, rows)
                if misses <= allowed_misses(total, self.target):
                    found = Decision(option, hits, rows)
                    break
                tried.append((option, misses / total))
            if found is not None:
                break
        if found is not None and not tried:
            return found
        otherwise = found.option.cost if found is not None and found.option is not None else fallback_cost
        reach = WIDE_CHECK_REACH * (1.0 - self.target)
        candidates = sorted((option for option, missed in tried if missed <= reach and option.cost < otherwise),
                            key=lambda option: option.cost)
        if not candidates:
            return found if found is not None else Decision(None, hits, rows)
        k, dim = checks.centroids.shape
        levels = len(checks.wider_rows) if shared is None else int(shared.largest(len(checks.wider_rows)))
        widest = self._total(shared, checks.wide_rows)[0]
        for option in candidates:
            for level in range(levels):
                level_rows, pending = self._total(
                    shared, checks.rows_at(level),
                    0.0 if checks.built(level) else flat_cost(checks.new_rows(level), k, dim, faiss_threads()))
                evaluating = option.wide_cost * level_rows / widest
                if otherwise - option.cost < WIDE_CHECK_PAYOFF * (evaluating + pending):
                    break
                check = checks.wider(level)
                wide_hits = option.evaluate(check)
                misses, total = self._total(shared, len(check.rows) - wide_hits, len(check.rows))
                if misses <= allowed_misses(total, self.target):
                    return Decision(option, wide_hits, len(check.rows))
                if misses > reach * total:
                    break
        return found if found is not None else Decision(None, hits, rows)

    def _prior_options(self, lists: CoarseLists, centroids: np.ndarray, c_sq: np.ndarray | None,
                       checks: SampleChecks, exact_cost: float, shared: SharedWork | None) -> list[PathOption]:
        """The prior path's options, cheapest first, none dearer than ``INDEX_MARGIN`` of exact
        search (with ``self.exact``); none without a previous assignment.

        The graph kept from the last call (no rebuild: the neighbours of a centroid change
        slowly) and every width of :meth:`_widths` with a fresh graph probed as wide as
        ``lists`` or a quarter of that (a graph's cost grows with its probes; the sample
        says whether the cheaper one is good enough), each evaluated on a check's anchors
        (the previous centroids of its rows) only; each alone and with each of
        ``RESCUE_SHARES`` of the rows, those farthest from their previous centroid,
        searched exactly (on a check those rows count as found: their exact centroid is
        known there)."""
        if self.previous is None:
            return []
        previous = self.previous
        k = len(centroids)
        widths = self._widths(k)
        # The kept graph is in no order: it is tried at its own width only.
        graphs: list[tuple[int, int | None]] = \
            [(self.graph.shape[1], None)] if self.graph is not None and len(self.graph) == k else []
        graph_probes = sorted({lists.probes, max(1, min(lists.probes, max(self.base_probes, lists.probes // 4)))})
        graphs += [(width, probes) for probes in graph_probes for width in widths]
        settings = [(w, p, share) for w, p in graphs for share in (0.0, *RESCUE_SHARES) if share == 0.0 or w < k]
        tasks = shared.size if shared is not None else 1
        n, wide_rows = len(self.x), checks.wide_rows
        pairs: dict[int | None, float | None] = {p: self._graph_pairs(lists.with_probes(p)) for p in graph_probes}
        pairs[None] = None  # the kept graph: nothing to build
        costs = self._total(shared, *[self._prior_cost(w, k, pairs[p], tasks) + self._rescue_cost(n, k, share)
                                      for w, p, share in settings])
        # On a check, a fresh graph is built for its anchors (at most one per row) at the widest width.
        wide_costs = self._total(shared, *[
            self._fixed_cost(wide_rows, w)
            + (self._graph_cost(graph_pairs, min(k, wide_rows), widths[-1]) if (graph_pairs := pairs[p]) is not None
               else 0.0)
            for w, p, _ in settings])

        def evaluate(check: SampleCheck, width: int, probes: int | None, share: float) -> int:
            if ("prior", width, probes) not in check.memo:
                check.memo["prior", width, probes] = search_prior_on(check, width, probes) == check.exact
            found = check.memo["prior", width, probes]
            if share > 0.0:
                if "away" not in check.memo:  # the check's rows' distances to their previous centroid
                    check.memo["away"] = exact_distances(check.xs, centroids, previous[check.rows], self.distance,
                                                         threads=1)
                found = found.copy()
                found[farthest_rows(check.memo["away"], share)] = True
            return int(found.sum())

        def search_prior_on(check: SampleCheck, width: int, probes: int | None) -> np.ndarray:
            if "anchors" not in check.memo:  # the check's previous centroids, each once
                anchors, anchor_of = np.unique(previous[check.rows], return_inverse=True)
                check.memo["anchors"] = (anchors, anchor_of.astype(np.int64))
            anchors, anchor_of = check.memo["anchors"]
            if probes is None:
                assert self.graph is not None  # the kept graph's option
                part = self.graph[anchors]
            else:
                # A fresh graph of the anchors per graph probe count, the widest (nearest
                # first: narrower ones are its prefixes), built only when an option needs it.
                if ("graph", probes) not in check.memo:
                    check.memo["graph", probes] = neighbour_graph(lists.with_probes(probes), centroids, anchors,
                                                                  widths[-1])
                part = check.memo["graph", probes]
            return search_fixed(check.xs, centroids, c_sq, anchor_of,
                                np.ascontiguousarray(part[:, :width]), width, self.distance, threads=1)

        options = [PathOption("prior", setting, costs[i], wide_costs[i],
                              partial(evaluate, width=setting[0], probes=setting[1], share=setting[2]))
                   for i, setting in enumerate(settings)]
        return [option for option in sorted(options, key=lambda option: option.cost)
                if self.exact is None or option.cost <= exact_cost * INDEX_MARGIN]

    def _probe_widths(self, m: int) -> list[int]:
        """The probe counts the sample tries: the configured one doubled up to all m lists
        (at most ``MAX_PROBES``: the lists' nearest lists are an m x widest table)."""
        widest = min(m, max(MAX_PROBES, self.base_probes))
        widths = [max(1, min(self.base_probes, widest))]
        while widths[-1] < widest:
            widths.append(min(widest, widths[-1] * 2))
        return widths

    def _probe_options(self, lists: CoarseLists, centroids: np.ndarray, c_sq: np.ndarray | None,
                       checks: SampleChecks, exact_cost: float, shared: SharedWork | None,
                       affordable: list[int]) -> Iterator[PathOption]:
        """The probe path's options, narrowest first, up to the first count costing more than
        ``INDEX_MARGIN`` of exact search (with ``self.exact``); the counts yielded are
        appended to ``affordable``. Evaluated on a check's rows only."""
        def starts_of(check: SampleCheck) -> np.ndarray:
            """The check's rows' nearest coarse lists (computed once per check)."""
            if "starts" not in check.memo:
                check.memo["starts"] = lists.start(check.xs)
            return check.memo["starts"]

        starts = starts_of(checks.small)

        def evaluate(check: SampleCheck, probed: CoarseLists) -> int:
            got = search_groups(check.xs, centroids, c_sq, starts_of(check), probed.candidates,
                                self.distance, threads=1)
            return int((got == check.exact).sum())

        for probes in self._probe_widths(len(lists.offsets) - 1):
            cost, wide_cost = self._total(shared, self._probe_cost(lists, probes, starts),
                                          self._probe_cost(lists, probes, starts, checks.wide_rows))
            if self.exact is not None and cost > exact_cost * INDEX_MARGIN:
                return
            affordable.append(probes)
            yield PathOption("probe", (probes,), cost, wide_cost, partial(evaluate, probed=lists.with_probes(probes)))

    def _search_prior(self, lists: CoarseLists, centroids: np.ndarray, c_sq: np.ndarray | None, width: int,
                      graph_probes: int | None, share: float, shared: SharedWork | None) -> np.ndarray:
        """The block searched among the ``width`` neighbours of each point's previous
        centroid, and ``share`` of its rows (those farthest from their previous centroid)
        among all centroids."""
        labels = self._search_neighbours(lists, centroids, c_sq, width, graph_probes, shared)
        if share > 0.0:
            assert self.previous is not None
            farthest = farthest_rows(exact_distances(self.x, centroids, self.previous, self.distance), share)
            labels[farthest] = nearest(self.x[farthest], centroids, self.distance)[:, 0]
        return labels

    def _search_neighbours(self, lists: CoarseLists, centroids: np.ndarray, c_sq: np.ndarray | None, width: int,
                           graph_probes: int | None, shared: SharedWork | None) -> np.ndarray:
        """The block searched among the ``width`` neighbours of each point's previous
        centroid. A graph up to ``GRAPH_MAX_BYTES`` is built (or kept) whole and kept for
        the next call; a wider one is built for one slice of the centroids at a time, each
        slice's points searched at once, and not kept."""
        x, k, previous = self.x, len(centroids), self.previous
        assert previous is not None
        if graph_probes is None or k * width * 4 <= GRAPH_MAX_BYTES:
            if graph_probes is not None:
                probed = lists.with_probes(graph_probes)
                self.graph = (shared.graph(probed, centroids, width) if shared is not None
                              else neighbour_graph(probed, centroids, np.arange(k), width, ordered=False))
            assert self.graph is not None
            return search_fixed(x, centroids, c_sq, previous, self.graph, width, self.distance)
        self.graph = None
        probed = lists.with_probes(graph_probes)
        labels = np.empty(len(x), dtype=np.int64)
        step = max(1, GRAPH_MAX_BYTES // (4 * width))
        order = np.argsort(previous, kind="stable")
        cuts = np.searchsorted(previous[order], np.arange(0, k + step, step))
        for i, lo in enumerate(range(0, k, step)):
            anchors = np.arange(lo, min(k, lo + step))
            part = (shared.graph_of(probed, centroids, width, anchors) if shared is not None
                    else neighbour_graph(probed, centroids, anchors, width, ordered=False))
            rows = order[cuts[i]:cuts[i + 1]]
            labels[rows] = search_fixed(x, centroids, c_sq, previous[rows] - lo, part, width, self.distance,
                                        rows=rows)
        return labels

    def assign(self, centroids: np.ndarray, seed: int = 0,
               shared: SharedWork | None = None) -> tuple[np.ndarray, np.ndarray | None, AssignStats]:
        """Labels of every row for ``centroids``, their exact distances when the path that
        ran computed them (the exact path) else None, and what was done. The per-centroid
        work (coarse list of each centroid, neighbour graph) is done here for all K, or
        split by ``shared``."""
        x, distance = self.x, self.distance
        k = len(centroids)
        if self.coarse is None:
            self.coarse = train_coarse(centroids, self.base_probes, distance, seed)
        m = len(self.coarse)
        list_of = shared.list_ids(centroids, self.coarse, distance) if shared is not None else None
        widest = self._probe_widths(m)[-1]
        # The neighbour graph probes as wide as the probe path last did (narrower graphs were
        # measured off target for the prior at the second iteration, K = 20,000, N/K = 20).
        lists = CoarseLists.build(centroids, self.coarse, widest, distance, list_of).with_probes(self.n_probes)
        c_sq = squared_norms(centroids) if distance == "l2" else None
        shift = sample_shift(self.calls)
        self.calls += 1
        self.sample = agreement_rows(len(x), shift=shift)
        checks = SampleChecks(x, centroids, distance, self.sample, shift)
        dist: np.ndarray | None = None
        exact_cost = self._total(shared, self.exact_cost(k))[0] if self.exact is not None else 0.0
        prior_options = self._prior_options(lists, centroids, c_sq, checks, exact_cost, shared)
        affordable: list[int] = []  # the probe counts tried: narrowest first, up to the first dearer than exact
        probe_options = self._probe_options(lists, centroids, c_sq, checks, exact_cost, shared, affordable)
        decision = self._first_on_target([prior_options, probe_options], checks,
                                         exact_cost if self.exact is not None else math.inf, shared)
        option = decision.option
        if self.previous is not None:  # the width the prior took, else the widest it may take
            self.n_neighbours = option.setting[0] if option is not None and option.path == "prior" \
                else self._widths(k)[-1]
        if option is not None and option.path == "prior":
            width, graph_probes, share = option.setting
            path, hits, rows = "prior", decision.hits, decision.rows
            labels = self._search_prior(lists, centroids, c_sq, width, graph_probes, share, shared)
        else:
            counts = self._probe_widths(m)
            # Off target: the first count dearer than exact search (the exact path runs), or the widest.
            self.n_probes = option.setting[0] if option is not None else counts[min(len(affordable), len(counts) - 1)]
            if option is not None or self.exact is None:
                path = "probe"
                labels = search_groups(x, centroids, c_sq, lists.start(x), lists.with_probes(self.n_probes).candidates,
                                       distance)
            else:  # no option meets the target for less than exact search
                path = "exact"
                labels, dist = self.exact(centroids)
            small = checks.small
            hits, rows = int((labels[small.rows] == small.exact).sum()), len(small.rows)
        self.previous = labels
        return labels, dist, AssignStats(path, hits, rows, self.n_probes, self.n_neighbours)


def assign_fresh(x: np.ndarray, centroids: np.ndarray, coarse: np.ndarray, distance: str, n_probes: int,
                 n_neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """One-off assignment to centroids with no previous labels (a reassignment after
    resampling), stored like a k-means' final one and so exact: the probe path's labels
    start the bounded exact search (:class:`~curation_spark.method.bounded_assign.BoundedAssigner`),
    which returns the exact nearest centroid and its exact distance."""
    from curation_spark.method.bounded_assign import GRAPH_MAX_CLUSTERS, BoundedAssigner  # it imports this module

    if len(centroids) > GRAPH_MAX_CLUSTERS:  # no candidate test there: a guess would not be used
        return BoundedAssigner(x, distance).assign(centroids)
    assigner = IndexAssigner(x, distance, n_probes, n_neighbours, coarse=coarse)
    guess, _, _ = assigner.assign(centroids)
    return BoundedAssigner(x, distance).assign(centroids, guess=guess)
