"""Arrow batches <-> numpy blocks: the one place where rows become matrices.

A partition's Arrow record batches (``point_id``, ``embedding`` list<float>) become one
contiguous float32 ``(n, d)`` block plus the id column, with no per-row Python. Rows are
put in ``point_id`` order so a block's content, and every floating-point sum over it, does
not depend on the order in which a shuffle delivered the rows.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OUTPUT_BATCH_ROWS = 65536


def batches_to_block(batches: Iterable[pa.RecordBatch], dim: int, id_col: str = "point_id",
                     emb_col: str = "embedding", sort_by_id: bool = True) -> tuple[pa.Array, np.ndarray]:
    """Concatenate a partition's batches into (ids, float32 (n, dim) matrix)."""
    id_chunks: list[pa.Array] = []
    value_chunks: list[np.ndarray] = []
    for batch in batches:
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
            raise ValueError(f"embedding column: expected {dim} values per row, got {len(values)} for {batch.num_rows} rows")
        value_chunks.append(values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False))
    if not id_chunks:
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
    return ids, x


def _whole(column: "pa.Array | pa.ChunkedArray") -> pa.Array:
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
