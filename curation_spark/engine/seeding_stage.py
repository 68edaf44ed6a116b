"""The two-level init inside the k-means barrier stage, its per-group work spread over the
stage's tasks (numpy/faiss and the task mesh; no Spark job).

:func:`curation_spark.engine.seeding_spark.two_level_init_spark` runs the same init as Spark
jobs before the k-means stage: a sort of the sample rows, a persisted sample, two
shuffles of it and a separate read of the input. At K = 100,000 on 2M x 128 points that
took 98 s, of which ~60 s were those jobs rather than arithmetic. Here the blocks are
already loaded, so the tasks exchange only what the init needs over the stage's sockets
(:class:`curation_spark.engine.exchange.TaskGroup`):

1. *sample*: every task has the ``xxhash64(point_id, seed)`` key of its rows; the keys
   under the init cut are all-gathered (8 bytes a row), so each task knows which of its
   rows are among the ``n_rows`` smallest (ties by id, as :func:`kmeans.init_sample`);
2. *coarse*: the sample ids are all-gathered to place the coarse sub-sample positions
   (:func:`seeding.subsample_positions`, in id order); task 0 gathers those rows (at most
   256 sqrt(K)), computes the coarse centroids and broadcasts them;
3. *groups*: every task labels its sample rows (:func:`seeding.coarse_labels`, a function
   of the row alone), the counts are all-gathered, each coarse cluster gets an owner task
   (largest estimated work first, to the least loaded task) and an all-to-all sends each
   row to its cluster's owner;
4. *fine*: owners run the k-means++ gain runs of their clusters, the curves are
   all-gathered, every task computes the same allocation (:func:`seeding.gain_allocation`),
   owners run the fine step (:func:`seeding.group_centroids`, reusing their runs) and the
   centroids are all-gathered in coarse-cluster order.

Each group sees its rows in id order with the generator the in-process version uses, so
the centroids equal ``seeding.two_level_init(sample, k, seed, ...)`` of the same sample,
bit for bit on the same machine. Memory per task: its share of the sample's rows, the
sample's keys and ids, and the K centroids.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from curation_spark.io.blocks import float_matrix_to_list_array, from_ipc, to_ipc
from curation_spark.method import seeding

if TYPE_CHECKING:
    import pyarrow as pa

    from curation_spark.engine.exchange import TaskGroup

__all__ = ["sample_rows", "owners_by_work", "two_level_init_in_stage"]


def _concat_int64(pieces: Sequence[Any]) -> np.ndarray:
    return np.concatenate([np.frombuffer(p, dtype=np.int64) for p in pieces]) if pieces else np.zeros(0, np.int64)


def sample_rows(group: TaskGroup, ids: pa.Array, key: np.ndarray | None, n_rows: int, n_total: int,
                cut: int) -> np.ndarray:
    """Positions (ascending) of this block's rows in the init sample: the ``n_rows`` rows
    of all blocks with the smallest key (ties by id), among those with ``key <= cut``;
    every row when ``n_rows >= n_total``. Only keys (and, on a 64-bit collision at the
    threshold, the tied rows' ids) cross the network."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if n_rows >= n_total:
        return np.arange(len(ids))
    if key is None:
        raise ValueError("an init sample smaller than the points needs the hash keys")
    below = np.flatnonzero(key <= np.int64(cut))
    keys = _concat_int64(group.all_gather(np.ascontiguousarray(key[below]).tobytes()))
    if len(keys) <= n_rows:
        return below
    threshold = np.partition(keys, n_rows - 1)[n_rows - 1]
    inside = below[key[below] < threshold]
    tied = below[key[below] == threshold]
    need = n_rows - int((keys < threshold).sum())
    if int((keys == threshold).sum()) > need:  # a hash collision at the threshold: lowest ids win
        schema = pa.schema([("id", ids.type)])
        local = pa.RecordBatch.from_arrays([ids.take(pa.array(tied))], schema=schema)
        everyone = from_ipc(group.all_gather(to_ipc(local)), schema).column("id").combine_chunks()
        chosen = everyone.take(pc.sort_indices(everyone)[:need])
        tied = tied[pc.is_in(ids.take(pa.array(tied)), value_set=chosen).to_numpy(zero_copy_only=False)]
    return np.sort(np.concatenate([inside, tied]))


def owners_by_work(sizes: np.ndarray, plan: seeding.FinePlan, n_tasks: int) -> np.ndarray:
    """Owner task of every coarse cluster: clusters by decreasing estimated work (rows x
    centres; ties by index), each to the task with the least work so far (ties: lowest
    rank). Integer arithmetic on the all-gathered counts, so every task gets the same."""
    work = np.asarray(sizes, dtype=np.int64) * np.maximum(np.maximum(plan.upper, plan.proportional), 1)
    owner = np.zeros(len(work), dtype=np.int64)
    load = np.zeros(n_tasks, dtype=np.int64)
    for c in np.lexsort((np.arange(len(work)), -work)).tolist():
        r = int(np.argmin(load))
        owner[c] = r
        load[r] += int(work[c])
    return owner


def _pack(groups: Sequence[int], arrays: Sequence[np.ndarray], dtype: type) -> bytes:
    """Arrays of some coarse clusters as one message: count, cluster ids, row counts, values."""
    head = np.array([len(groups), *groups, *[len(a) for a in arrays]], dtype=np.int64)
    body = np.concatenate([np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays]) if arrays else \
        np.zeros(0, dtype=dtype)
    return head.tobytes() + body.tobytes()


def _unpack(payload: Any, dtype: type, width: int) -> dict[int, np.ndarray]:
    m = int(np.frombuffer(payload, dtype=np.int64, count=1)[0])
    head = np.frombuffer(payload, dtype=np.int64, count=1 + 2 * m)
    groups, lengths = head[1:1 + m], head[1 + m:]
    values: np.ndarray = np.frombuffer(payload, dtype=dtype, offset=8 * (1 + 2 * m))
    out, at = {}, 0
    for c, n in zip(groups.tolist(), lengths.tolist(), strict=True):
        out[c] = values[at:at + n * width].reshape(n, width) if width > 1 else values[at:at + n]
        at += n * width
    return out


def two_level_init_in_stage(group: TaskGroup, ids: pa.Array, x: np.ndarray, key: np.ndarray | None, k: int,
                            seed: int, distance: str, n_rows: int, n_total: int, cut: int, *,
                            coarse_iters: int = seeding.COARSE_ITERS, fine_iters: int = seeding.FINE_ITERS,
                            allocation: str = "gain") -> np.ndarray:
    """Exactly ``k`` initial centroids, (k, d) float32, by the two-level init on the init
    sample of all the stage's blocks (``ids`` ascending, ``x`` raw rows, ``key`` their
    ``xxhash64(point_id, seed)``); every task returns the same array. See the module notes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if allocation not in seeding.ALLOCATIONS:
        raise ValueError(f"allocation: unknown value {allocation!r} (choose {' or '.join(seeding.ALLOCATIONS)})")
    d = x.shape[1]
    rows = sample_rows(group, ids, key, n_rows, n_total, cut)
    mine_ids = ids.take(pa.array(rows))
    xs = seeding.prepare_points(x[rows], distance)

    # 2. coarse centroids from the sub-sample (positions in the sample's id order).
    id_schema = pa.schema([("id", ids.type)])
    all_ids = from_ipc(group.all_gather(to_ipc(pa.RecordBatch.from_arrays([mine_ids], schema=id_schema))),
                       id_schema).column("id").combine_chunks()
    n = len(all_ids)
    if k < 1 or k > n:
        raise ValueError(f"k must be in [1, {n}] (the sample size), got {k}")
    pos = seeding.subsample_positions(n, k, (seed,))
    chosen = all_ids.take(pc.sort_indices(all_ids).take(pa.array(pos)))
    picked = np.flatnonzero(pc.is_in(mine_ids, value_set=chosen).to_numpy(zero_copy_only=False))
    sub_schema = pa.schema([("id", ids.type), ("embedding", pa.list_(pa.float32()))])
    pieces = group.gather(to_ipc(pa.RecordBatch.from_arrays(
        [mine_ids.take(pa.array(picked)), float_matrix_to_list_array(xs[picked])], schema=sub_schema)))
    payload = None
    if pieces is not None:
        table = from_ipc(pieces, sub_schema).sort_by([("id", "ascending")])
        sub = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        coarse = seeding.coarse_centroids(np.ascontiguousarray(sub.reshape(-1, d), dtype=np.float32), k, (seed,),
                                          distance, coarse_iters)
        payload = coarse.tobytes()
    coarse = np.frombuffer(group.broadcast(payload), dtype=np.float32).reshape(-1, d)

    # 3. labels, counts, owners; every row to its cluster's owner.
    labels = seeding.coarse_labels(xs, coarse, distance)
    sizes = np.sum([np.frombuffer(p, dtype=np.int64) for p in
                    group.all_gather(np.bincount(labels, minlength=len(coarse)).astype(np.int64).tobytes())], axis=0)
    plan = seeding.fine_plan(sizes, k)
    owner = owners_by_work(sizes, plan, group.size)
    row_schema = pa.schema([("id", ids.type), ("coarse", pa.int64()), ("embedding", pa.list_(pa.float32()))])
    outgoing = []
    for r in range(group.size):
        sel = pa.array(np.flatnonzero(owner[labels] == r))
        outgoing.append(to_ipc(pa.RecordBatch.from_arrays(
            [mine_ids.take(sel), pa.array(labels).take(sel), float_matrix_to_list_array(xs[sel.to_numpy()])],
            schema=row_schema)))
    del xs
    table = from_ipc(group.all_to_all(outgoing), row_schema).sort_by([("coarse", "ascending"), ("id", "ascending")])
    del outgoing
    mine = np.flatnonzero(owner == group.rank)
    values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    owned_x = np.ascontiguousarray(values.reshape(-1, d), dtype=np.float32)
    starts = np.searchsorted(table.column("coarse").to_numpy(), np.arange(len(coarse) + 1))
    groups = {c: owned_x[starts[c]:starts[c + 1]] for c in mine.tolist()}

    # 4. gain runs -> allocation (same on every task) -> fine step -> all centroids.
    runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if allocation == "size":
        alloc = plan.proportional
    else:
        runs = {c: seeding.gain_run(groups[c], int(plan.upper[c]), (seed,), c) for c in mine.tolist()
                if plan.upper[c] > 0}
        curves: dict[int, np.ndarray] = {}
        for p in group.all_gather(_pack(list(runs), [r[1] for r in runs.values()], np.float64)):
            curves.update(_unpack(p, np.float64, 1))
        alloc = seeding.gain_allocation(plan, curves, k)
    done = [c for c in mine.tolist() if alloc[c] > 0]
    parts = [seeding.group_centroids(groups[c], int(alloc[c]), (seed,), c, plan, runs.get(c), distance, fine_iters,
                                     coarse_iters, allocation) for c in done]
    del groups, owned_x
    everything: dict[int, np.ndarray] = {}
    for p in group.all_gather(_pack(done, parts, np.float32)):
        everything.update(_unpack(p, np.float32, d))
    out = np.concatenate([everything[c] for c in sorted(everything)], axis=0) if everything else \
        np.zeros((0, d), np.float32)
    if len(out) != k:
        raise RuntimeError(f"two-level init in the stage gave {len(out)} centroids, expected {k}")
    return np.ascontiguousarray(out, dtype=np.float32)
