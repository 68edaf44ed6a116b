"""Arrow batches -> numpy block: rows land id-sorted, values intact, bad widths refused."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation_spark.io.blocks import batches_to_block, float_matrix_to_list_array


def _batches(ids: np.ndarray, x: np.ndarray, sizes: list[int], value_type=pa.float32()) -> list[pa.RecordBatch]:
    out, start = [], 0
    for size in sizes:
        sl = slice(start, start + size)
        emb = pa.ListArray.from_arrays(pa.array(np.arange(0, (size + 1) * x.shape[1], x.shape[1], dtype=np.int32)),
                                       pa.array(x[sl].reshape(-1), type=value_type))
        out.append(pa.RecordBatch.from_arrays([pa.array(ids[sl]), emb], names=["point_id", "embedding"]))
        start += size
    return out


@pytest.mark.parametrize("value_type", [pa.float32(), pa.float64()])
def test_rows_are_sorted_by_id_with_their_values(value_type):
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000).astype(np.int64) * 7
    x = rng.standard_normal((1000, 5)).astype(np.float32)
    got_ids, got_x = batches_to_block(_batches(ids, x, [300, 0, 450, 250], value_type), 5)
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids.to_numpy(), ids[order])
    np.testing.assert_array_equal(got_x, x[order])
    assert got_x.dtype == np.float32 and got_x.flags.c_contiguous


def test_unsorted_keeps_arrival_order_and_empty_input():
    rng = np.random.default_rng(1)
    ids = rng.permutation(50).astype(np.int64)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    got_ids, got_x = batches_to_block(_batches(ids, x, [20, 30]), 3, sort_by_id=False)
    np.testing.assert_array_equal(got_ids.to_numpy(), ids)
    np.testing.assert_array_equal(got_x, x)
    empty_ids, empty_x = batches_to_block([], 3)
    assert len(empty_ids) == 0 and empty_x.shape == (0, 3)


def test_wrong_width_is_refused():
    x = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="expected 4 values per row"):
        batches_to_block(_batches(np.arange(4), x, [4]), 4)


def test_matrix_round_trip():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    col = float_matrix_to_list_array(x)
    assert col.to_pylist() == x.tolist()
