"""Column checks before the JVM starts: the schema read from a local table's footer or
Delta log (curation_spark.io.local_schema) gives the same one-line errors as the checks on
the DataFrame, passes every valid table, and stays silent on files it does not understand."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation_spark.cli import main
from curation_spark.config import load_config
from curation_spark.curation.commands import check_keep_columns
from curation_spark.errors import CurationError
from curation_spark.io import local_schema, preflight
from curation_spark.io.tables import check_columns, detect_format, read_table

ROWS = [(i, [float(i), 1.0], f"l{i % 2}", [i, i + 1], i % 3) for i in range(6)]
SCHEMA = "id long, embedding array<float>, label string, ints array<int>, shard int"


def _message(action) -> str | None:
    try:
        action()
    except CurationError as exc:
        return str(exc)
    return None


def spark_message(df, id_col: str, embedding_col: str, keep: tuple[str, ...] = ()) -> str | None:
    """What the checks after the JVM start say (``run``: keep columns first, then the columns)."""
    def checks():
        if keep:
            check_keep_columns(df, SimpleNamespace(sampling=SimpleNamespace(keep_columns=keep)))
        check_columns(df, id_col, embedding_col)
    return _message(checks)


def preflight_message(path: str, id_col: str = "id", embedding_col: str = "embedding", keep: tuple[str, ...] = (),
                      extra: tuple[str, ...] = ()) -> str | None:
    overrides = [f"input.path={path}", f"input.id_col={id_col}", f"input.embedding_col={embedding_col}",
                 f"sampling.keep_columns=[{','.join(keep)}]", *extra]
    config = load_config([], overrides)
    return _message(lambda: preflight.check_input_schema(config, keep_columns=bool(keep)))


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory):
    """Small real tables written by Spark: name -> (path, DataFrame read back)."""
    from pyspark.ml.linalg import Vectors

    root = tmp_path_factory.mktemp("preflight")
    df = spark.createDataFrame(ROWS, SCHEMA).repartition(2)
    vectors = spark.createDataFrame([(i, Vectors.dense([float(i), 1.0]), f"l{i % 2}") for i in range(4)],
                                    ["id", "embedding", "label"])
    out = {}

    def save(name, frame, fmt, partition_by=None):
        path = str(root / name)
        writer = frame.write.format(fmt)
        (writer.partitionBy(partition_by) if partition_by else writer).save(path)
        out[name] = path

    save("parquet", df, "parquet")
    save("parquet_double", df.withColumn("embedding", df.embedding.cast("array<double>")), "parquet")
    save("parquet_partitioned", df, "parquet", "shard")
    save("parquet_vector", vectors, "parquet")
    save("delta", df, "delta")
    save("delta_partitioned", df, "delta", "label")  # a middle column: Delta keeps the schema's order
    save("delta_vector", vectors, "delta")
    # Column mapping by name, then a rename: the log keeps logical names, the files physical ones.
    path = str(root / "delta_mapping")
    df.withColumnRenamed("embedding", "emb").write.format("delta").save(path)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.minReaderVersion'='2', "
              "'delta.minWriterVersion'='5', 'delta.columnMapping.mode'='name')")
    spark.sql(f"ALTER TABLE delta.`{path}` RENAME COLUMN emb TO embedding")
    out["delta_mapping"] = path
    return {name: (p, read_table(spark, p)) for name, p in out.items()}


VALID = [("id", "embedding", ()), ("id", "embedding", ("label", "shard"))]
ERRORS = [("ident", "embedding", ()), ("id", "emb", ()), ("id", "label", ()), ("id", "ints", ()),
          ("embedding", "embedding", ()), ("label", "embedding", ("nope",)), ("id", "embedding", ("label", "Label"))]
#: Checks the preflight leaves to Spark: the type name of an inferred partition column.
LEFT_TO_SPARK = {("parquet_partitioned", "id", "shard")}


@pytest.mark.parametrize("name", ["parquet", "parquet_double", "parquet_partitioned", "parquet_vector", "delta",
                                  "delta_partitioned", "delta_vector", "delta_mapping"])
def test_same_messages_as_the_spark_checks(tables, name):
    path, df = tables[name]
    cases = VALID + ERRORS + [("id", "shard", ()), ("shard", "embedding", ())]
    for id_col, emb_col, keep in cases:
        if name.endswith("vector") and {"ints", "shard"} & {id_col, emb_col, *keep}:
            continue  # (the Vector tables have only id, embedding and label)
        expected = spark_message(df, id_col, emb_col, keep)
        got = preflight_message(path, id_col, emb_col, keep)
        if (name, id_col, emb_col) in LEFT_TO_SPARK:
            assert got is None, (name, id_col, emb_col)
            continue
        assert got == expected, (name, id_col, emb_col, keep)
        if (id_col, emb_col, keep) in VALID:
            assert got is None
        elif (id_col, emb_col, keep) in ERRORS:
            assert got is not None


def test_vector_column_is_a_vector_in_both_formats(tables):
    for name in ("parquet_vector", "delta_vector"):
        path, df = tables[name]
        schema = local_schema.read_local_schema(path)
        assert dict(schema.columns)["embedding"] == local_schema.ColumnKind("vector", scalar=False, embedding=True)
        assert preflight_message(path, "embedding", "embedding") == spark_message(df, "embedding", "embedding")
        assert "has type vector" in preflight_message(path, "embedding", "embedding")


def test_column_mapping_uses_logical_names(tables):
    path, df = tables["delta_mapping"]
    assert local_schema.read_local_schema(path).names == df.columns == ["id", "embedding", "label", "ints", "shard"]
    assert preflight_message(path, embedding_col="emb") == spark_message(df, "id", "emb")


def test_partition_columns_count_as_columns(tables):
    for name in ("parquet_partitioned", "delta_partitioned"):
        path, df = tables[name]
        schema = local_schema.read_local_schema(path)
        assert schema.names == df.columns
        assert schema.partition_columns == (("shard",) if name.startswith("parquet") else ("label",))


def test_delta_checkpoint_and_later_commits(spark, tmp_path):
    """The newest metaData from the checkpoint, or from a commit after it; older commits
    cleaned from the log are not needed."""
    path = str(tmp_path / "cp")
    df = spark.createDataFrame(ROWS, SCHEMA)
    df.write.format("delta").save(path)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.checkpointInterval'='2')")
    for _ in range(3):
        df.write.format("delta").mode("append").save(path)  # versions 2, 3, 4: checkpoints at 2 and 4
    log = os.path.join(path, "_delta_log")
    assert os.path.exists(os.path.join(log, f"{4:020d}.checkpoint.parquet"))
    schema = local_schema.read_delta_schema(path)
    assert schema.source.endswith("checkpoint.parquet") and schema.names == df.columns
    for version in range(4):  # as log clean-up leaves it: the checkpoint and what follows
        os.remove(os.path.join(log, f"{version:020d}.json"))
    fresh = read_table(spark, path)
    assert preflight_message(path, embedding_col="emb") == spark_message(fresh, "id", "emb")
    # A schema change after the checkpoint: the commit's metaData wins.
    df.withColumn("extra", df.id * 2).write.format("delta").mode("append").option("mergeSchema", "true").save(path)
    schema = local_schema.read_delta_schema(path)
    assert schema.source.endswith(f"{5:020d}.json") and schema.names[-1] == "extra"
    assert preflight_message(path, embedding_col="emb") == spark_message(read_table(spark, path), "id", "emb")


def test_arrow_written_parquet_types_are_named_as_spark_names_them(spark, tmp_path):
    """Parquet that Spark did not write (no Spark schema in the footer): each column as the
    embedding gives Spark's message, or none for the types left to Spark."""
    n = 2
    table = pa.table({
        "id": pa.array([1, 2], pa.int64()), "embedding": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32())),
        "i8": pa.array([1, 2], pa.int8()), "i16": pa.array([1, 2], pa.int16()), "i32": pa.array([1, 2], pa.int32()),
        "u8": pa.array([1, 2], pa.uint8()), "u16": pa.array([1, 2], pa.uint16()),
        "u32": pa.array([1, 2], pa.uint32()), "u64": pa.array([1, 2], pa.uint64()),
        "f32": pa.array([1, 2], pa.float32()), "f64": pa.array([1, 2], pa.float64()),
        "flag": pa.array([True, False]), "s": pa.array(["a", "b"]), "ls": pa.array(["a", "b"], pa.large_string()),
        "bin": pa.array([b"a", b"b"]), "day": pa.array([1, 2], pa.date32()),
        "dec": pa.array([1, 2], pa.decimal128(10, 2)), "ints": pa.array([[1], [2]], pa.list_(pa.int32())),
        "doubles": pa.array([[1.0], [2.0]], pa.list_(pa.float64())),
        "fixed": pa.array([[1.0, 2.0]] * n, pa.list_(pa.float32(), 2)),
        "st": pa.array([{"a": 1, "b": "x"}] * n, pa.struct([("a", pa.int32()), ("b", pa.string())])),
        "m": pa.array([[("k", 1)]] * n, pa.map_(pa.string(), pa.int32())),
        "cat": pa.array(["a", "b"]).dictionary_encode(),
        "ts": pa.array([1, 2], pa.timestamp("us", tz="UTC")),
    })
    folder = tmp_path / "arrow"
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")
    df = read_table(spark, str(folder))
    for col in table.column_names:
        got, expected = preflight_message(str(folder), "id", col), spark_message(df, "id", col)
        if col == "ts":  # Spark's timestamp type depends on the writer's flags: left to Spark
            assert got is None
        else:
            assert got == expected, col
        got, expected = preflight_message(str(folder), col, "embedding"), spark_message(df, col, "embedding")
        assert got == expected or (got is None and col == "ts"), col


def test_json_types_match_pyspark():
    """The JSON schema reader names types as pyspark does."""
    import pyspark.sql.types as T
    from pyspark.ml.linalg import VectorUDT

    from curation_spark.io.tables import column_kind

    types = [T.ByteType(), T.ShortType(), T.IntegerType(), T.LongType(), T.FloatType(), T.DoubleType(),
             T.DecimalType(12, 3), T.DecimalType(), T.StringType(), T.BinaryType(), T.BooleanType(), T.DateType(),
             T.TimestampType(), T.TimestampNTZType(), T.NullType(), T.DayTimeIntervalType(0, 3),
             T.YearMonthIntervalType(0, 1), T.VariantType(), T.ArrayType(T.FloatType()),
             T.ArrayType(T.DoubleType()), T.ArrayType(T.LongType()), T.MapType(T.StringType(), T.IntegerType()),
             T.StructType([T.StructField("a", T.IntegerType()), T.StructField("b b", T.ArrayType(T.StringType()))]),
             VectorUDT(), T.ArrayType(VectorUDT())]
    for dtype in types:
        assert local_schema.spark_json_kind(dtype.jsonValue()) == column_kind(dtype), dtype


def test_not_a_parquet_file_is_named(spark, tables, tmp_path):
    """A stray file Spark would read as Parquet: one line naming it; Spark does fail on it."""
    for stray in ("README.txt", "zzz.txt"):  # sorted before the data files (the schema file) and after
        folder = tmp_path / stray
        shutil.copytree(tables["parquet"][0], folder)
        (folder / stray).write_text("not parquet\n")
        message = preflight_message(str(folder))
        assert message.startswith(f"input.path: {folder}/{stray} is not a Parquet file"), message
        with pytest.raises(Exception, match="is not a Parquet file"):
            spark.read.parquet(str(folder)).count()
        # With spark.sql.files.ignoreCorruptFiles Spark skips it (after the first file): left to Spark.
        assert preflight_message(str(folder), extra=("spark.conf.spark.sql.files.ignoreCorruptFiles=true",)) is None


def test_first_file_gives_the_schema_unless_merge_schema(spark, tmp_path):
    """Spark takes the schema of the first file in path order; with mergeSchema the union of
    all, which the preflight leaves to Spark."""
    emb = pa.array([[1.0, 2.0]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": [1], "embedding": emb}), tmp_path / "part-a.parquet")
    pq.write_table(pa.table({"id": [2], "embedding": emb, "extra": [1]}), tmp_path / "part-b.parquet")
    df = read_table(spark, str(tmp_path))
    assert df.columns == ["id", "embedding"]
    assert preflight_message(str(tmp_path), keep=("extra",)) == spark_message(df, "id", "embedding", ("extra",))
    merged = spark.read.option("mergeSchema", "true").parquet(str(tmp_path))
    assert "extra" in merged.columns
    assert preflight_message(str(tmp_path), keep=("extra",),
                             extra=("spark.conf.spark.sql.parquet.mergeSchema=true",)) is None


def test_hidden_and_empty_files_are_ignored_as_spark_does(spark, tables, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(tables["parquet"][0], folder)
    for name in ("_NOTES.txt", ".hidden", "zzz_empty"):  # hidden, hidden, empty (skipped by Spark's scan)
        (folder / name).write_text("" if name == "zzz_empty" else "x")
    assert preflight_message(str(folder)) is None
    assert spark.read.parquet(str(folder)).count() == len(ROWS)


def test_empty_folder_holds_no_table(spark, tmp_path):
    (tmp_path / "_SUCCESS").write_text("")
    expected = _message(lambda: detect_format(spark, str(tmp_path)))
    assert expected and preflight_message(str(tmp_path)) == expected


def test_ten_thousand_files_open_one_footer(tables, tmp_path, monkeypatch):
    """The schema of the first data file only, as Spark without mergeSchema."""
    source = tables["parquet"][0]
    first = sorted(n for n in os.listdir(source) if n.endswith(".parquet"))[0]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(10_000):
        os.link(os.path.join(source, first), folder / f"part-{i:05d}.parquet")
    footers, opened = [], []
    read_schema, is_parquet = pq.read_schema, local_schema._is_parquet
    monkeypatch.setattr(pq, "read_schema", lambda p, *a, **k: footers.append(p) or read_schema(p, *a, **k))
    monkeypatch.setattr(local_schema, "_is_parquet", lambda p, s: opened.append(p) or is_parquet(p, s))
    started = time.perf_counter()
    assert preflight_message(str(folder), embedding_col="emb").startswith("column 'emb' (input.embedding_col)")
    assert time.perf_counter() - started < 3
    assert footers == [str(folder / "part-00000.parquet")] and len(opened) == 1


def _delta_log(folder, commits: dict[int, list[dict]]) -> str:
    log = folder / "_delta_log"
    log.mkdir(parents=True)
    for version, actions in commits.items():
        (log / f"{version:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")
    return str(folder)


def _metadata(schema_string: str, provider: str = "parquet", configuration=None) -> dict:
    return {"metaData": {"id": "x", "format": {"provider": provider, "options": {}}, "schemaString": schema_string,
                         "partitionColumns": [], "configuration": configuration or {}}}


GOOD_SCHEMA = json.dumps({"type": "struct", "fields": [
    {"name": "id", "type": "long", "nullable": True, "metadata": {}},
    {"name": "embedding", "type": {"type": "array", "elementType": "float", "containsNull": True},
     "nullable": True, "metadata": {}}]})
PROTOCOL = {"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}


@pytest.mark.parametrize("case", ["garbage", "gap", "last_checkpoint", "unknown_type", "staged", "provider",
                                  "coordinated", "no_metadata"])
def test_a_log_it_does_not_understand_is_left_to_spark(tmp_path, case):
    """Even with a wrong column name: no error from the preflight, Spark's checks speak."""
    good = [PROTOCOL, _metadata(GOOD_SCHEMA)]
    commits = {0: good, 1: [{"commitInfo": {}}]}
    if case == "garbage":
        commits[2] = [{"commitInfo": {}}]
    elif case == "gap":
        commits[3] = [{"commitInfo": {}}]
    elif case == "unknown_type":
        commits[1] = [_metadata(GOOD_SCHEMA.replace('"long"', '{"type": "weird"}'))]
    elif case == "provider":
        commits[1] = [_metadata(GOOD_SCHEMA, provider="orc")]
    elif case == "coordinated":
        commits[1] = [_metadata(GOOD_SCHEMA, configuration={"delta.coordinatedCommits.commitCoordinator-preview": "x"})]
    elif case == "no_metadata":
        commits = {0: [PROTOCOL], 1: [{"commitInfo": {}}]}
    path = _delta_log(tmp_path / "t", commits)
    log = tmp_path / "t" / "_delta_log"
    if case == "garbage":
        (log / f"{2:020d}.json").write_text('{"metaData": {"schemaString": \n')
    elif case == "last_checkpoint":
        (log / "_last_checkpoint").write_text(json.dumps({"version": 1, "size": 3}))
    elif case == "staged":
        (log / "_staged_commits").mkdir()
        (log / "_staged_commits" / f"{2:020d}.abc.json").write_text("{}")
    with pytest.raises(local_schema.SchemaUnknown):
        local_schema.read_local_schema(path)
    assert preflight_message(path, embedding_col="emb") is None


def test_a_log_it_understands_is_checked(tmp_path):
    path = _delta_log(tmp_path / "t", {0: [PROTOCOL, _metadata(GOOD_SCHEMA)], 1: [{"commitInfo": {}}]})
    assert preflight_message(path) is None
    assert preflight_message(path, embedding_col="emb") == (
        "column 'emb' (input.embedding_col) not found; the table has columns: id, embedding")


def test_unreadable_parquet_layouts_are_left_to_spark(tables, tmp_path):
    """Data files both at the top and in k=v folders (Spark refuses it in its own words)."""
    folder = tmp_path / "mixed"
    shutil.copytree(tables["parquet_partitioned"][0], folder)
    first = next(n for n in sorted(os.listdir(folder / "shard=0")) if n.endswith(".parquet"))
    shutil.copy(folder / "shard=0" / first, folder / first)
    assert preflight_message(str(folder), embedding_col="emb") is None


def test_keep_columns_only_for_run(tables):
    """``sampling.keep_columns`` is checked for ``run`` only (the other commands do not read it)."""
    path, df = tables["parquet"]
    config = load_config([], [f"input.path={path}", "sampling.keep_columns=[nope]"])
    preflight.check_input_schema(config)  # validate / cluster / dedup / update: not their business
    with pytest.raises(CurationError) as info:
        preflight.check_input_schema(config, keep_columns=True)
    assert str(info.value) == spark_message(df, "id", "embedding", ("nope",))


def _no_spark(monkeypatch):
    """Act as a fresh CLI process (no session yet), and fail if one is asked for."""
    from curation_spark.curation import commands
    from curation_spark.io import session

    def boom(*_a, **_k):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(session, "_launched_by_spark_submit", lambda: False)
    monkeypatch.setattr(session, "get_spark", boom)
    monkeypatch.setattr(commands, "get_spark", boom, raising=False)
    for var in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "DATABRICKS_RUNTIME_VERSION"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("command", ["validate", "cluster", "dedup", "update", "run"])
def test_cli_reports_a_wrong_column_before_spark(tables, command, capsys, monkeypatch, tmp_path):
    _no_spark(monkeypatch)
    path, df = tables["parquet"]
    argv = [command, "--set", f"input.path={path}", "--set", "input.embedding_col=emb",
            "--set", f"output.path={tmp_path / 'run'}", "--set", "sampling.target_size=5"]
    if command == "validate":
        argv = argv[:5]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err == f"error: {spark_message(df, 'id', 'emb')}"


def test_cli_keep_column_before_spark(tables, capsys, monkeypatch, tmp_path):
    _no_spark(monkeypatch)
    path, df = tables["delta"]
    code = main(["run", "--set", f"input.path={path}", "--set", f"output.path={tmp_path / 'run'}",
                 "--set", "sampling.target_size=5", "--set", "sampling.keep_columns=[labels]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {spark_message(df, 'id', 'embedding', ('labels',))}"


def test_cli_wrong_column_in_a_fresh_process_is_fast(tables):
    """A fresh process (no JVM): exit 2, one line, in well under the ~40 s of a Spark start."""
    path, df = tables["parquet"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "SPARK_REMOTE")}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "curation_spark", "validate", "--set", f"input.path={path}",
                          "--set", "input.embedding_col=emb"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == f"error: {spark_message(df, 'id', 'emb')}"
    assert seconds < 10, seconds
