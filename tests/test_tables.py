"""Embedding tables: Delta/Parquet round trips, format detection, validation errors."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from curation_spark.config import InputConfig
from curation_spark.errors import InputError
from curation_spark.io.tables import (delta_version, detect_format, read_input, read_table, table_exists, to_points,
                                   validate_embeddings, write_table)


def _frame(spark, rows, schema="id long, embedding array<float>"):
    return spark.createDataFrame(rows, schema)


def test_delta_round_trip_is_a_real_delta_table(spark, tmp_dir):
    import deltalake

    path = os.path.join(tmp_dir, "emb")
    df = _frame(spark, [(i, [float(i), float(i) / 2]) for i in range(10)])
    write_table(df, path, "delta")
    assert detect_format(spark, path) == "delta"
    back = read_table(spark, path).orderBy("id").collect()
    assert [r["id"] for r in back] == list(range(10))
    assert back[3]["embedding"] == [3.0, 1.5]
    # An independent reader (delta-rs) sees the same table.
    table = deltalake.DeltaTable(path).to_pyarrow_table()
    assert table.num_rows == 10
    assert sorted(table.column("id").to_pylist()) == list(range(10))
    assert delta_version(spark, path) == 0
    write_table(df.limit(4), path, "delta")  # overwrite = a new atomic commit
    assert delta_version(spark, path) == 1
    assert deltalake.DeltaTable(path).to_pyarrow_table().num_rows == 4


def test_parquet_write_replaces_atomically(spark, tmp_dir):
    path = os.path.join(tmp_dir, "pq")
    write_table(_frame(spark, [(1, [1.0])]), path, "parquet")
    write_table(_frame(spark, [(2, [2.0]), (3, [3.0])]), path, "parquet")
    assert detect_format(spark, path) == "parquet"
    assert sorted(r["id"] for r in read_table(spark, path).collect()) == [2, 3]
    leftovers = [n for n in os.listdir(tmp_dir) if n.startswith(("_tmp_", "_old_"))]
    assert leftovers == []


def test_failed_write_publishes_nothing(spark, tmp_dir):
    from pyspark.sql import functions as F

    path = os.path.join(tmp_dir, "broken")
    bad = spark.range(10).select(
        F.col("id"), F.when(F.col("id") == 7, F.raise_error(F.lit("disk full (simulated)"))).otherwise(F.col("id")).alias("x"))
    for fmt in ("parquet", "delta"):
        with pytest.raises(Exception, match="nothing was published"):
            write_table(bad, path + fmt, fmt)
        assert not table_exists(spark, path + fmt, fmt)
        log_dir = os.path.join(path + fmt, "_delta_log")
        assert not os.path.isdir(log_dir) or not [n for n in os.listdir(log_dir) if n.endswith(".json")]


@pytest.mark.parametrize("kind", ["array<double>", "vector"])
def test_double_and_vector_embeddings_are_accepted(spark, kind):
    from pyspark.ml.linalg import Vectors

    if kind == "vector":
        df = spark.createDataFrame([(1, Vectors.dense([1.0, 2.0])), (2, Vectors.sparse(2, [0], [3.0]))], ["id", "embedding"])
    else:
        df = _frame(spark, [(1, [1.0, 2.0]), (2, [3.0, 0.0])], "id long, embedding array<double>")
    stats = validate_embeddings(df, "id", "embedding")
    assert (stats.n_rows, stats.dim) == (2, 2)
    pts = to_points(df, "id", "embedding").orderBy("point_id").collect()
    assert pts[1]["embedding"] == [3.0, 0.0]
    assert dict(to_points(df, "id", "embedding").dtypes)["embedding"] == "array<float>"


def test_custom_column_names_and_string_ids(spark):
    df = spark.createDataFrame([("a", [1.0, 2.0]), ("b", [3.0, 4.0])], "img string, vec array<float>")
    stats = validate_embeddings(df, "img", "vec")
    assert stats.n_rows == 2 and stats.dim == 2


@pytest.mark.parametrize("rows, schema, id_col, emb_col, message", [
    ([(1, [1.0])], "id long, embedding array<float>", "image_id", "embedding", "column 'image_id' (input.id_col) not found"),
    ([(1, [1.0])], "id long, embedding array<float>", "id", "vec", "column 'vec' (input.embedding_col) not found"),
    ([(1, "x")], "id long, embedding string", "id", "embedding", "column 'embedding': has type string"),
    ([(1, [1])], "id long, embedding array<int>", "id", "embedding", "column 'embedding': has type array<int>"),
    ([(1, [1.0]), (2, None), (3, None)], "id long, embedding array<float>", "id", "embedding",
     "column 'embedding': 2 row(s) have a null embedding"),
    ([(1, [1.0, 2.0]), (2, [1.0]), (3, [1.0, 2.0])], "id long, embedding array<float>", "id", "embedding",
     "column 'embedding': inconsistent dimension: 1 row(s) differ from dimension 2"),
    ([(1, [1.0, float("nan")]), (2, [float("inf"), 1.0]), (3, [1.0, 1.0])], "id long, embedding array<float>", "id",
     "embedding", "column 'embedding': 2 row(s) hold NaN, Inf or null values"),
    ([(1, [1.0]), (1, [2.0]), (2, [3.0])], "id long, embedding array<float>", "id", "embedding",
     "column 'id': 1 row(s) repeat an id"),
    ([(None, [1.0]), (2, [2.0])], "id long, embedding array<float>", "id", "embedding", "column 'id': 1 row(s) have a null id"),
    ([], "id long, embedding array<float>", "id", "embedding", "input table is empty"),
])
def test_bad_tables_give_one_clear_message(spark, rows, schema, id_col, emb_col, message):
    df = _frame(spark, rows, schema)
    with pytest.raises(InputError) as err:
        validate_embeddings(df, id_col, emb_col)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_empty_paths(spark, tmp_dir):
    with pytest.raises(InputError, match="does not exist"):
        read_input(spark, InputConfig(os.path.join(tmp_dir, "nope"), None, "auto", "id", "embedding"))
    empty = os.path.join(tmp_dir, "empty")
    os.makedirs(empty)
    with pytest.raises(InputError, match="holds no table"):
        read_input(spark, InputConfig(empty, None, "auto", "id", "embedding"))
    with pytest.raises(InputError, match="input.table: table no_such_table does not exist"):
        read_input(spark, InputConfig(None, "no_such_table", "auto", "id", "embedding"))


def test_catalog_table_input(spark):
    df = _frame(spark, [(1, [1.0, 0.0]), (2, [0.0, 1.0])])
    df.write.format("delta").mode("overwrite").saveAsTable("emb_catalog_test")
    try:
        raw = read_input(spark, InputConfig(None, "emb_catalog_test", "auto", "id", "embedding"))
        assert validate_embeddings(raw, "id", "embedding").n_rows == 2
    finally:
        spark.sql("DROP TABLE IF EXISTS emb_catalog_test")


def test_parquet_written_by_pyarrow_is_detected(spark, tmp_dir):
    import pyarrow.parquet as pq

    path = os.path.join(tmp_dir, "pa")
    os.makedirs(path)
    emb = pa.array([np.array([1.0, 2.0], dtype=np.float32), np.array([3.0, 4.0], dtype=np.float32)],
                   type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()), "embedding": emb}), os.path.join(path, "part-0.parquet"))
    raw = read_input(spark, InputConfig(path, None, "auto", "id", "embedding"))
    assert validate_embeddings(raw, "id", "embedding").dim == 2
