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


def test_checked_block_sets_bad_rows_aside_with_their_reason():
    """What update's assignment pass keeps (right size, finite values; arrival order) and
    what it sets aside: a null embedding (dim null), another size, NaN / Inf / a null value
    (the run's size)."""
    from curation_spark.io.blocks import checked_assignment_batches, checked_block

    good = [[3.0, 4.0], [0.0, 1.0]]
    emb = pa.array([good[0], None, [1.0, 2.0, 3.0], [float("nan"), 1.0], good[1], [1.0, None], [float("inf"), 0.0]],
                   pa.list_(pa.float32()))
    batch = pa.RecordBatch.from_arrays([pa.array([10, 11, 12, 13, 14, 15, 16], pa.int64()), emb],
                                       names=["point_id", "embedding"])
    block = checked_block([batch, batch.slice(0, 0)], 2)
    assert block.ids.to_pylist() == [10, 14] and np.array_equal(block.x, np.array(good, np.float32))
    np.testing.assert_allclose(block.norms, [5.0, 1.0])
    assert sorted(zip(block.rejected_ids.to_pylist(), block.rejected_dims.to_pylist())) == [
        (11, None), (12, 3), (13, 2), (15, 2), (16, 2)]
    schema = pa.schema([("point_id", pa.int64()), ("cluster_id", pa.int32()), ("distance", pa.float32()),
                        ("embedding_dim", pa.int32()), ("norm", pa.float32())])
    out = pa.Table.from_batches(list(checked_assignment_batches(block, np.array([1, 0]), np.array([0.5, 0.25],
                                                                                                np.float32), 2, schema)))
    assert out.column("cluster_id").to_pylist() == [1, 0, None, None, None, None, None]
    assert out.column("embedding_dim").to_pylist()[:2] == [2, 2] and out.column("norm").null_count == 5
    everything_bad = checked_block([batch.slice(1, 2)], 2)
    assert len(everything_bad.ids) == 0 and everything_bad.x.shape == (0, 2) and len(everything_bad.rejected_ids) == 2
