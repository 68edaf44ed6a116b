"""A level's resampling steps inside the k-means barrier stage, on the blocks already loaded.

On Spark each resampling step used to be three jobs: a window over all assignments for
the per-cluster sample, a k-means on the sample, and a full reassignment pass that moves
every embedding from the JVM to Python again (83 s of the 10M-point scale run, most of it
that transfer). When the sample is small enough for one process
(``clustering.in_process_max_mb``), the barrier stage that ran the level's k-means does
the steps itself, on the blocks it holds:

1. every task takes its local first ``sample_size`` rows per cluster (by distance, or by
   ``xxhash64(point_id, seed)`` computed by Spark), then id; the global first
   ``sample_size`` of a cluster are among the union of the local ones;
2. the candidates go to the owner of their cluster's id range (all-to-all), which keeps
   the first ``sample_size`` per cluster (same order: key, then id), and task 0 gathers
   the sample: ``row_number() OVER (PARTITION BY cluster_id ORDER BY key, point_id) <=
   sample_size`` of :func:`curation_spark.curation.hierarchy.resampling_sample`, exactly;
3. task 0 runs the step's fresh k-means on the sample with
   :func:`curation_spark.method.inprocess.fit_in_memory` (the Spark path's init rules and seeds)
   and broadcasts the centroids;
4. every task reassigns its block exactly (bounds started from each point's old cluster,
   :class:`~curation_spark.method.bounded_assign.BoundedAssigner`), or through the centroid
   index for large K, as ``kmeans.assign_points`` does.

The tables are the Spark path's up to float rounding (the sample k-means runs on one block
instead of several). Exchange sizes: a task sends at most K x sample_size candidate rows
and the sample is K x sample_size rows, which is what the bound checks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curation_spark.io.blocks import float_matrix_to_list_array, from_ipc, to_ipc
from curation_spark.method import inprocess, kernels, lloyd, reduce
from curation_spark.method.inprocess import LevelPlan

if TYPE_CHECKING:
    from curation_spark.engine.exchange import TaskGroup

#: Bytes per sampled row besides its embedding (cluster, key, id, hash keys), for the bound.
ROW_OVERHEAD_BYTES = 48


def fits_in_stage(n_clusters: int, sample_size: int, dim: int, max_mb: int) -> bool:
    """Whether a level's resampling samples (K x sample_size rows) may be gathered to one
    task: at most ``max_mb`` (``clustering.in_process_max_mb``; 0 turns this off)."""
    return max_mb > 0 and n_clusters * sample_size * (4 * dim + ROW_OVERHEAD_BYTES) <= max_mb * 2 ** 20


def _first_per_cluster_table(table: pa.Table, sample_size: int) -> pa.Table:
    """Rows of ``table`` (columns ``cluster``, ``key``, ``id``, ...) that are among the first
    ``sample_size`` of their cluster by (key, id): the window's row choice."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([("cluster", "ascending"), ("key", "ascending"), ("id", "ascending")])
    cluster = table.column("cluster").to_numpy()
    n = len(cluster)
    starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return table.filter(pa.array(rank < sample_size))


@dataclass(frozen=True)
class StageResampling:
    """The resampling steps of one level, run by :func:`curation_spark.engine.kmeans.fit` inside its
    barrier stage (the ``follow_up`` hook). ``key_seeds``: the seeds whose
    ``xxhash64(point_id, seed)`` the stage must carry as columns."""

    plan: LevelPlan
    key_seeds: tuple[int, ...]

    @classmethod
    def for_plan(cls, plan: LevelPlan, n_points: int, dim: int) -> StageResampling:
        # Keys the steps read: their `r` order and their k-means' init samples (the key of the
        # level's own init sample is added by kmeans.fit when it draws that sample itself).
        needed = {p.seed for p in plan.kmeans_params[1:]}
        if plan.strategy == "r":
            needed.update(plan.resampling_seeds)
        seeds = [s for s in plan.hash_seeds(n_points, dim) if s in needed]
        return cls(plan, tuple(seeds))

    def run(self, group: TaskGroup, ids: pa.Array, x: np.ndarray, labels: np.ndarray, dist: np.ndarray,
            centroids: np.ndarray, keys: dict[int, np.ndarray], stage: str
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """All steps on this task's block; returns (labels, dist, centroids, info) where
        ``info`` (complete on task 0) holds the k-means' objective and size summary before
        resampling and one entry per step, as the Spark path records them."""
        plan = self.plan
        distance = plan.distance
        k = len(centroids)
        sizes = _global_sizes(group, labels, k)
        objective = float(reduce.all_gather_values(group, [kernels.objective_terms(dist, distance)])[:, 0].sum())
        info: dict[str, Any] = {"objective_kmeans": objective, "sizes_kmeans": kernels.size_stats(sizes),
                                "sizes_kmeans_histogram": kernels.size_histogram(sizes), "resampling": []}
        for step in range(1, plan.n_resampling_steps + 1):
            t0 = time.perf_counter()
            order_key = dist if plan.strategy == "c" else keys[plan.resampling_seeds[step - 1]]
            sample = self._gather_sample(group, ids, x, labels, order_key, keys, k)
            new = None
            entry: dict[str, Any] = {}
            if group.rank == 0:
                new, entry = self._fit_sample(sample, k, step, stage)
            payload = group.broadcast(new.tobytes() if new is not None else None)
            new_c = np.frombuffer(payload, dtype=np.float32).reshape(-1, x.shape[1]).copy()
            guess = kernels.assign(centroids, new_c, distance)[0][labels]  # old cluster -> nearest new centroid
            labels, dist = inprocess.reassign(x, new_c, distance, plan.kmeans_params[step], x_normalised=True,
                                              guess=guess)
            centroids, k = new_c, len(new_c)
            sizes = _global_sizes(group, labels, k)
            objective = float(reduce.all_gather_values(group, [kernels.objective_terms(dist, distance)])[:, 0].sum())
            if group.rank == 0:
                entry.update({"objective": objective, "sizes": kernels.size_stats(sizes),
                              "seconds": time.perf_counter() - t0, "in_stage": True})
                info["resampling"].append(entry)
        return labels, dist, centroids, info

    def _gather_sample(self, group: TaskGroup, ids: pa.Array, x: np.ndarray, labels: np.ndarray,
                       order_key: np.ndarray, keys: dict[int, np.ndarray], k: int) -> pa.Table | None:
        """Task 0 gets the step's sample (id-sorted table: ``id``, ``embedding``, key
        columns); the others get None."""
        s = self.plan.sample_size
        rows = inprocess.first_per_cluster(labels, order_key, s)
        bounds = reduce.owner_bounds(k, group.size)
        owner = np.searchsorted(bounds, labels[rows], side="right") - 1
        key_type = pa.float32() if order_key.dtype == np.float32 else pa.int64()
        extra = [f"k{seed}" for seed in self.key_seeds]
        schema = pa.schema([("cluster", pa.int32()), ("key", key_type), ("id", ids.type),
                            ("embedding", pa.list_(pa.float32())), *[(name, pa.int64()) for name in extra]])

        def batch_of(sel: np.ndarray) -> pa.RecordBatch:
            take = pa.array(sel)
            return pa.RecordBatch.from_arrays(
                [pa.array(labels[sel].astype(np.int32)), pa.array(order_key[sel]), ids.take(take),
                 float_matrix_to_list_array(x[sel]), *[pa.array(keys[seed][sel]) for seed in self.key_seeds]],
                schema=schema)

        outgoing = [to_ipc(batch_of(rows[owner == r])) for r in range(group.size)]
        owned = _first_per_cluster_table(from_ipc(group.all_to_all(outgoing), schema), s)
        pieces = group.gather(to_ipc(owned.combine_chunks().to_batches()[0]) if owned.num_rows else b"")
        if pieces is None:
            return None
        return from_ipc(pieces, schema).sort_by([("id", "ascending")])

    def _fit_sample(self, sample: pa.Table, k: int, step: int, stage: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The step's fresh k-means on the sample (task 0), with the Spark path's rules."""
        plan = self.plan
        substage = f"{stage} · resampling {step}"
        n_sample = sample.num_rows
        emb = sample.column("embedding").combine_chunks()
        values = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        dim = len(values) // max(1, n_sample)
        xs = values.reshape(n_sample, dim)
        sample_keys = {seed: sample.column(f"k{seed}").to_numpy() for seed in self.key_seeds}
        k_step = lloyd.clamp_clusters(k, n_sample, substage)
        res = inprocess.fit_in_memory(xs, replace(plan.kmeans_params[step], n_clusters=k_step), sample_keys, substage)
        return np.ascontiguousarray(res.centroids, dtype=np.float32), {"step": step, "sample_points": n_sample}


def _global_sizes(group: TaskGroup, labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster sizes over all blocks (K int64 on every task): owner reduce, then all-gather."""
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    idx = np.flatnonzero(counts).astype(np.int32)
    _, _, _, owned = reduce.reduce_scatter(group, idx, counts[idx], np.zeros((len(idx), 0)), k, 0)
    bounds = reduce.owner_bounds(k, group.size)
    full = np.empty(k, dtype=np.int64)
    for r, piece in enumerate(group.all_gather(np.ascontiguousarray(owned, dtype=np.int64).tobytes())):
        full[bounds[r]:bounds[r + 1]] = np.frombuffer(piece, dtype=np.int64)
    return full


