"""Arrow batches <-> numpy blocks: the one place where rows become matrices.

A partition's Arrow record batches (``point_id``, ``embedding`` list<float>) become one
contiguous float32 ``(n, d)`` block plus the id column, with no per-row Python. Rows are
put in ``point_id`` order so a block's content, and every floating-point sum over it, does
not depend on the order in which a shuffle delivered the rows.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OUTPUT_BATCH_ROWS = 65536


@dataclass
class BlockChecks:
    """The input checks of :func:`curation_spark.io.tables.validate_embeddings`, counted on one
    block while it loads (so a large input needs no separate validation pass). Rows with a
    null embedding or another dimension are counted and left out of the block; the counts
    of all blocks are added up (:meth:`as_array` / :meth:`from_arrays`) before judging."""

    rows: int = 0
    null_ids: int = 0
    duplicate_ids: int = 0
    null_embeddings: int = 0
    bad_dim: int = 0
    bad_values: int = 0
    min_dim: int = 2 ** 31 - 1
    max_dim: int = -1

    def as_array(self) -> np.ndarray:
        return np.array([self.rows, self.null_ids, self.duplicate_ids, self.null_embeddings, self.bad_dim,
                         self.bad_values, self.min_dim, self.max_dim], dtype=np.int64)

    @classmethod
    def from_arrays(cls, arrays: Iterable[np.ndarray]) -> BlockChecks:
        """The checks of all blocks together (sums; min/max of the dimensions)."""
        stacked = np.stack(list(arrays))
        total = stacked[:, :6].sum(axis=0)
        return cls(*[int(v) for v in total], int(stacked[:, 6].min()),  # type: ignore[call-arg]  # 6 + 2 fields
                   int(stacked[:, 7].max()))

    def count_batch(self, emb: pa.Array, dim: int) -> pa.Array | None:
        """Count this batch's null and wrong-sized embeddings; the mask of rows to keep, or
        None when all are fine."""
        lengths = pc.list_value_length(emb)
        if len(lengths) and lengths.null_count < len(lengths):
            lo, hi = pc.min_max(lengths).values()
            self.min_dim, self.max_dim = min(self.min_dim, lo.as_py()), max(self.max_dim, hi.as_py())
        nulls = emb.null_count
        wrong = pc.sum(pc.not_equal(lengths, dim)).as_py() or 0
        self.null_embeddings += nulls
        self.bad_dim += wrong
        if not nulls and not wrong:
            return None
        return pc.fill_null(pc.equal(lengths, dim), False)

    def count_block(self, ids: pa.Array, x: np.ndarray) -> None:
        """Ids (null, repeated: ``ids`` sorted) and values (NaN, Inf) of the loaded block."""
        self.rows += len(ids)
        self.null_ids += ids.null_count
        if len(ids) > 1:
            self.duplicate_ids += pc.sum(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py() or 0
        for start in range(0, len(x), OUTPUT_BATCH_ROWS):
            chunk = x[start:start + OUTPUT_BATCH_ROWS]
            self.bad_values += int((~np.isfinite(chunk)).any(axis=1).sum())


def batches_to_block(batches: Iterable[pa.RecordBatch], dim: int, id_col: str = "point_id",
                     emb_col: str = "embedding", sort_by_id: bool = True,
                     checks: BlockChecks | None = None) -> tuple[pa.Array, np.ndarray]:
    """Concatenate a partition's batches into (ids, float32 (n, dim) matrix).

    With ``checks``, the input checks are counted into it and bad embeddings (null, other
    dimension) are left out instead of failing; null values inside an embedding become NaN.
    """
    id_chunks: list[pa.Array] = []
    value_chunks: list[np.ndarray] = []
    n_in = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        n_in += batch.num_rows
        if checks is not None:
            keep = checks.count_batch(_whole(batch.column(emb_col)), dim)
            if keep is not None:
                batch = batch.filter(keep)
                if batch.num_rows == 0:
                    continue
        # A copy: a read batch's columns are slices of one message buffer, so keeping the
        # id column itself would keep every batch's embeddings alive until the end.
        id_chunks.append(pa.concat_arrays([_whole(batch.column(id_col))]))
        emb = batch.column(emb_col)
        if isinstance(emb, pa.ChunkedArray):
            emb = emb.combine_chunks()
        values = emb.flatten()
        if len(values) != batch.num_rows * dim:
            raise ValueError(f"embedding column: expected {dim} values per row, got {len(values)} "
                             f"for {batch.num_rows} rows")
        value_chunks.append(values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False))
    if not id_chunks:
        if checks is not None:
            checks.rows += n_in
        return pa.array([], type=pa.int64()), np.zeros((0, dim), dtype=np.float32)
    ids = pa.concat_arrays(id_chunks)
    n = len(ids)
    # Rows are scattered straight into their final (id-sorted) place, releasing each batch
    # as it is copied: peak memory stays near one copy of the block, not three.
    position = None
    if sort_by_id and n > 1:
        order = pc.sort_indices(ids).to_numpy()
        ids = ids.take(pa.array(order))
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n, dtype=np.int64)
    x = np.empty((n, dim), dtype=np.float32)
    start = 0
    value_chunks.reverse()
    while value_chunks:
        chunk = value_chunks.pop().reshape(-1, dim)
        stop = start + len(chunk)
        if position is None:
            x[start:stop] = chunk
        else:
            x[position[start:stop]] = chunk
        start = stop
    if checks is not None:
        checks.count_block(ids, x)
        checks.rows += n_in - len(ids)  # the rows left out were counted as bad embeddings
    return ids, x


@dataclass
class CheckedBlock:
    """A partition's rows split for an assignment that checks them as it goes: ``ids`` /
    ``x`` / ``norms`` of the rows it can assign (the run's dimension, finite values), and
    the ``rejected_ids`` with their ``rejected_dims`` (null: null embedding; another size;
    the run's size: NaN, Inf or null values) of the rows it cannot."""

    ids: pa.Array
    x: np.ndarray
    norms: np.ndarray
    rejected_ids: pa.Array
    rejected_dims: pa.Array


def checked_block(batches: Iterable[pa.RecordBatch], dim: int, id_col: str = "point_id",
                  emb_col: str = "embedding") -> CheckedBlock:
    """:func:`batches_to_block` (batch order kept) that sets bad rows aside instead of failing."""
    kept: list[pa.RecordBatch] = []
    rejected_ids: list[pa.Array] = []
    rejected_dims: list[pa.Array] = []
    id_type = None
    for batch in batches:
        id_type = batch.schema.field(id_col).type
        lengths = pc.list_value_length(_whole(batch.column(emb_col)))
        right = pc.fill_null(pc.equal(lengths, dim), False)
        if not pc.all(right).as_py():
            wrong = pc.invert(right)
            rejected_ids.append(pc.filter(_whole(batch.column(id_col)), wrong))
            rejected_dims.append(pc.filter(lengths, wrong).cast(pa.int32()))
            batch = batch.filter(right)
        kept.append(batch)
    ids, x = batches_to_block(kept, dim, id_col, emb_col, sort_by_id=False)
    if id_type is not None and len(ids) == 0:
        ids = pa.array([], type=id_type)
    finite = np.isfinite(x).all(axis=1)  # (null values inside an embedding arrived as NaN)
    if not finite.all():
        bad = pa.array(~finite)
        rejected_ids.append(pc.filter(ids, bad))
        rejected_dims.append(pa.array(np.full(int((~finite).sum()), dim, dtype=np.int32)))
        ids, x = pc.filter(ids, pa.array(finite)), x[finite]
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    if rejected_ids:
        all_rejected = pa.concat_arrays([a.cast(ids.type) for a in rejected_ids])
        all_dims = pa.concat_arrays(rejected_dims)
    else:
        all_rejected, all_dims = pa.array([], type=ids.type), pa.array([], type=pa.int32())
    return CheckedBlock(ids, x, norms, all_rejected, all_dims)


def _whole(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def float_matrix_to_list_array(x: np.ndarray) -> pa.Array:
    """(n, d) float32 matrix as an Arrow list<float> column (one list per row)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1)))


def assignment_batches(ids: pa.Array, labels: np.ndarray, dist: np.ndarray,
                       schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Yield (point_id, cluster_id, distance) batches of bounded size."""
    n = len(ids)
    for start in range(0, n, OUTPUT_BATCH_ROWS):
        end = min(n, start + OUTPUT_BATCH_ROWS)
        yield pa.RecordBatch.from_arrays(
            [ids.slice(start, end - start), pa.array(labels[start:end].astype(np.int32)), pa.array(dist[start:end])],
            schema=schema,
        )


def checked_assignment_batches(block: CheckedBlock, labels: np.ndarray, dist: np.ndarray, dim: int,
                               schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Yield the assignments of a :class:`CheckedBlock` (``point_id, cluster_id, distance,
    embedding_dim, norm``): its assigned rows, then its rejected ones with null cluster,
    distance and norm."""
    n = len(block.ids)
    for start in range(0, n, OUTPUT_BATCH_ROWS):
        end = min(n, start + OUTPUT_BATCH_ROWS)
        yield pa.RecordBatch.from_arrays(
            [block.ids.slice(start, end - start).cast(schema.field(0).type),
             pa.array(labels[start:end].astype(np.int32)),
             pa.array(dist[start:end]), pa.array(np.full(end - start, dim, dtype=np.int32)),
             pa.array(block.norms[start:end])], schema=schema)
    r = len(block.rejected_ids)
    if r:
        yield pa.RecordBatch.from_arrays(
            [block.rejected_ids.cast(schema.field(0).type), pa.nulls(r, pa.int32()), pa.nulls(r, pa.float32()),
             block.rejected_dims, pa.nulls(r, pa.float32())], schema=schema)


def to_ipc(batch: pa.RecordBatch) -> bytes:
    """One record batch as Arrow IPC stream bytes (for the barrier stage's exchanges)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(payloads: Iterable, schema: pa.Schema) -> pa.Table:
    """The batches of several :func:`to_ipc` payloads as one table (empty payloads skipped)."""
    tables = [pa.ipc.open_stream(pa.py_buffer(bytes(p))).read_all() for p in payloads if len(p)]
    return pa.concat_tables(tables) if tables else schema.empty_table()
