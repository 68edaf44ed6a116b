"""Reading, validating and writing tables.

Input embedding tables come from a path (Parquet or Delta, detected) or a catalog table
name; the embedding column may be ``array<float>``, ``array<double>`` or an ML
``Vector``. :func:`validate_embeddings` checks everything in one aggregate pass before
any clustering starts. Output tables are written whole or not at all: Delta commits are
atomic, Parquet is written to a temporary sibling folder and renamed into place.
"""
from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation_spark.errors import CurationError, InputError
from curation_spark.io import paths
from curation_spark.io.blocks import BlockChecks
from curation_spark.io.local_schema import ColumnKind
from curation_spark.io.session import require_delta

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.config import InputConfig

log = logging.getLogger(__name__)

#: Columns of the normalised point frame every later stage works on.
POINT_ID = "point_id"
EMBEDDING = "embedding"


@dataclass(frozen=True)
class EmbeddingStats:
    """What validation learned about an input table."""

    n_rows: int
    dim: int
    #: Smallest and largest embedding L2 norm, over ``norm_rows`` rows (all of them after a
    #: full validation pass; a bounded sample otherwise): ``clustering.distance: auto``.
    norm_min: float | None = None
    norm_max: float | None = None
    norm_rows: int = 0


# --------------------------------------------------------------------------- reading


def detect_format(spark: SparkSession, path: str) -> str:
    """``delta`` if the folder has a ``_delta_log``, else ``parquet``; errors name the path."""
    if not paths.exists(spark, path):
        raise InputError(f"input.path: {paths.display(path)} does not exist")
    if has_delta_commit(spark, path):
        return "delta"
    if paths.is_dir(spark, path) and not paths.has_data_files(spark, path):
        raise InputError(f"input.path: {paths.display(path)} holds no table (no data files and no _delta_log)")
    return "parquet"


def read_table(spark: SparkSession, path: str, fmt: str = "auto") -> DataFrame:
    """Read a Parquet or Delta table from a path, with the format detected when ``auto``."""
    if fmt == "auto":
        fmt = detect_format(spark, path)
    elif not paths.exists(spark, path):
        raise InputError(f"input.path: {paths.display(path)} does not exist")
    if fmt == "delta":
        require_delta(spark, f"reading {path}")
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        return spark.read.format(fmt).load(path)
    except (PySparkException, Py4JError) as exc:
        raise InputError(f"input.path: {paths.display(path)} could not be read as {fmt}: {_first_line(exc)}") from None


def read_input(spark: SparkSession, cfg: InputConfig) -> DataFrame:
    """The raw input table named by the ``input`` config section (all its columns)."""
    cfg.require_source()
    if cfg.table:
        if not spark.catalog.tableExists(cfg.table):
            raise InputError(f"input.table: table {cfg.table} does not exist")
        return spark.table(cfg.table)
    assert cfg.path is not None
    return read_table(spark, cfg.path, cfg.format)


def input_location(spark: SparkSession, cfg: InputConfig) -> str | None:
    """The storage path behind the input (for the never-write-over-the-input guard); None
    for a DataFrame handed in (no path, no table) or a table without one."""
    if cfg.path:
        return cfg.path
    if not cfg.table:
        return None
    from pyspark.errors import PySparkException

    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {cfg.table}").collect()
    except PySparkException as exc:  # a view or a catalog that does not describe locations
        log.debug("input.table %s: no location (%s)", cfg.table, _first_line(exc))
        return None
    for r in rows:
        if r[0] == "Location":
            return str(r[1])
    return None


# --------------------------------------------------------------------------- validation


def embedding_array_column(df: DataFrame, embedding_col: str):
    """The embedding as ``array<float>`` whatever its stored type (checked by validation)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType

    dtype = df.schema[embedding_col].dataType
    col = F.col(embedding_col)
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, FloatType):
        return col
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, DoubleType):
        return col.cast("array<float>")
    if _is_vector(dtype):
        return vector_to_array(col, "float32")
    raise InputError(
        f"column {embedding_col!r}: has type {dtype.simpleString()}, "
        "expected array<float>, array<double> or an ML Vector"
    )


def check_columns(df: DataFrame, id_col: str, embedding_col: str) -> None:
    """Schema-only checks (no Spark job): columns exist and have usable types."""
    check_column_kinds([(f.name, column_kind(f.dataType)) for f in df.schema.fields], id_col, embedding_col)


def column_kind(dtype) -> ColumnKind:
    """A Spark type reduced to what :func:`check_column_kinds` needs."""
    from pyspark.sql.types import ArrayType, AtomicType, DoubleType, FloatType

    embedding = (isinstance(dtype, ArrayType) and isinstance(dtype.elementType, (FloatType, DoubleType))
                 or _is_vector(dtype))
    return ColumnKind(dtype.simpleString(), scalar=isinstance(dtype, AtomicType), embedding=embedding)


def check_column_kinds(columns: Sequence[tuple[str, ColumnKind]], id_col: str, embedding_col: str) -> None:
    """The messages of :func:`check_columns` from plain (name, kind) pairs, so the check
    before Spark starts (:mod:`curation_spark.io.preflight`, from the table's files) and
    the one on the DataFrame say the same line. A failed type check on a column whose
    type only Spark can name (``type_string`` None) says nothing: Spark's check will."""
    names = [name for name, _ in columns]
    for key, col in (("input.id_col", id_col), ("input.embedding_col", embedding_col)):
        if col not in names:
            raise InputError(f"column {col!r} ({key}) not found; the table has columns: {', '.join(names)}")
    kinds: dict[str, ColumnKind] = {}
    for name, kind in columns:
        kinds.setdefault(name, kind)  # (the first of repeated names, as ``df.schema[name]``)
    emb = kinds[embedding_col]
    if not emb.embedding and emb.type_string is not None:
        raise InputError(
            f"column {embedding_col!r}: has type {emb.type_string}, "
            "expected array<float>, array<double> or an ML Vector"
        )
    ident = kinds[id_col]
    if not ident.scalar and ident.type_string is not None:
        raise InputError(f"column {id_col!r}: has type {ident.type_string}, expected a scalar id (integer or string)")


def validate_embeddings(df: DataFrame, id_col: str, embedding_col: str,
                        count_duplicates: bool = True) -> EmbeddingStats:
    """Check an embedding table in one aggregate pass and return its size and dimension.

    Raises :class:`InputError` naming the column and the number of bad rows for: missing
    column, wrong type, empty table, null or duplicate ids, null embeddings, inconsistent
    dimension, NaN/Inf values. ``count_duplicates=False`` skips the distinct count (a
    shuffle) for rows whose ids are distinct by construction.
    """
    from pyspark.sql import functions as F

    check_columns(df, id_col, embedding_col)
    emb = embedding_array_column(df, embedding_col)
    arr = df.select(F.col(id_col).alias("_id"), emb.alias("_e"))
    first = arr.where(F.col("_e").isNotNull()).select(F.size("_e").alias("d")).head(1)
    ref_dim = int(first[0]["d"]) if first else -1
    bad_value = F.exists("_e", lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    row = arr.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("_id").isNull().cast("long")).alias("null_ids"),
        (F.countDistinct("_id") if count_duplicates else F.count("_id")).alias("distinct_ids"),
        F.sum(F.col("_e").isNull().cast("long")).alias("null_emb"),
        F.sum((F.col("_e").isNotNull() & (F.size("_e") != F.lit(ref_dim))).cast("long")).alias("bad_dim"),
        F.min(F.size("_e")).alias("min_dim"),
        F.max(F.size("_e")).alias("max_dim"),
        F.sum(F.coalesce(bad_value, F.lit(False)).cast("long")).alias("bad_values"),
        F.min(_norm("_e")).alias("norm_min"),
        F.max(_norm("_e")).alias("norm_max"),
    ).collect()[0]
    n = int(row["n"])
    checks = BlockChecks(rows=n, null_ids=int(row["null_ids"] or 0),
                         duplicate_ids=n - int(row["distinct_ids"]) - int(row["null_ids"] or 0),
                         null_embeddings=int(row["null_emb"] or 0), bad_dim=int(row["bad_dim"] or 0),
                         bad_values=int(row["bad_values"] or 0),
                         min_dim=int(row["min_dim"]) if row["min_dim"] is not None else -1,
                         max_dim=int(row["max_dim"]) if row["max_dim"] is not None else -1)
    raise_for_checks(checks, id_col, embedding_col, ref_dim)
    return EmbeddingStats(n_rows=n, dim=ref_dim, norm_min=float(row["norm_min"]), norm_max=float(row["norm_max"]),
                          norm_rows=n)


#: Rows whose norms the quick path (no validation pass) measures for ``distance: auto``.
NORM_SAMPLE_ROWS = 10_000


def _norm(col: str):
    """The L2 norm of an array<float> column, in the JVM (no Python round trip)."""
    from pyspark.sql import functions as F

    return F.sqrt(F.aggregate(col, F.lit(0.0).cast("double"), lambda acc, x: acc + x.cast("double") * x))


def raise_for_checks(checks: BlockChecks, id_col: str, embedding_col: str, ref_dim: int) -> None:
    """The one-line :class:`InputError` for the first failed check, if any: the same
    messages whether the checks ran as a validation pass or while the k-means loaded its
    blocks (:class:`~curation_spark.io.blocks.BlockChecks`)."""
    n = checks.rows
    if n == 0:
        raise InputError("input table is empty (0 rows)")
    if checks.null_ids:
        raise InputError(f"column {id_col!r}: {checks.null_ids} row(s) have a null id")
    if checks.duplicate_ids:
        raise InputError(f"column {id_col!r}: {checks.duplicate_ids} row(s) repeat an id that another row already "
                         "has (ids must be unique)")
    if checks.null_embeddings:
        raise InputError(f"column {embedding_col!r}: {checks.null_embeddings} row(s) have a null embedding")
    if checks.bad_dim:
        raise InputError(
            f"column {embedding_col!r}: inconsistent dimension: {checks.bad_dim} row(s) differ "
            f"from dimension {ref_dim} "
            f"(sizes range from {checks.min_dim} to {checks.max_dim})"
        )
    if ref_dim == 0:
        raise InputError(f"column {embedding_col!r}: embeddings are empty (dimension 0)")
    if checks.bad_values:
        raise InputError(f"column {embedding_col!r}: {checks.bad_values} row(s) hold NaN, Inf or null values")


def quick_stats(df: DataFrame, id_col: str, embedding_col: str) -> EmbeddingStats:
    """Row count and dimension without a pass over the embeddings: the schema checks, a
    count (table metadata for Delta, file footers for Parquet) and the first row's size.
    For inputs whose full checks run while the first k-means loads its blocks."""
    from pyspark.sql import functions as F

    check_columns(df, id_col, embedding_col)
    n = df.count()
    if n == 0:
        raise InputError("input table is empty (0 rows)")
    emb = embedding_array_column(df, embedding_col)
    first = df.select(emb.alias("_e")).where(F.col("_e").isNotNull()).select(F.size("_e").alias("d")).head(1)
    if not first:
        raise InputError(f"column {embedding_col!r}: {n} row(s) have a null embedding")
    dim = int(first[0]["d"])
    if dim == 0:
        raise InputError(f"column {embedding_col!r}: embeddings are empty (dimension 0)")
    # Norms of the first rows (cheap: no full scan); nulls and bad rows are refused later,
    # while level 1 loads its blocks.
    norms = (df.select(emb.alias("_e")).where(F.col("_e").isNotNull()).limit(NORM_SAMPLE_ROWS)
             .agg(F.min(_norm("_e")).alias("lo"), F.max(_norm("_e")).alias("hi"), F.count(F.lit(1)).alias("n"))
             .collect()[0])
    finite = norms["lo"] is not None and all(math.isfinite(v) for v in (norms["lo"], norms["hi"]))
    return EmbeddingStats(n_rows=n, dim=dim, norm_min=float(norms["lo"]) if finite else None,
                          norm_max=float(norms["hi"]) if finite else None, norm_rows=int(norms["n"]) if finite else 0)


def to_points(df: DataFrame, id_col: str, embedding_col: str) -> DataFrame:
    """The normalised frame the algorithm reads: ``point_id`` and ``embedding`` array<float>."""
    from pyspark.sql import functions as F

    return df.select(F.col(id_col).alias(POINT_ID), embedding_array_column(df, embedding_col).alias(EMBEDDING))


def arrow_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """A DataFrame of an Arrow table in the driver, typed by its Arrow schema (an empty
    table too: pyspark cannot take a column without chunks, which a filter can leave)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return spark.createDataFrame(table if table.num_rows else table.schema.empty_table(),
                                 schema=from_arrow_schema(table.schema))


# --------------------------------------------------------------------------- writing


def write_table(df: DataFrame, path: str, fmt: str = "delta", partition_by: list[str] | None = None) -> None:
    """Replace the table at ``path`` with ``df`` as one atomic step.

    Delta: an overwrite commit (readers see the old or the new version, never a mix).
    Parquet: written to a hidden sibling folder, then renamed into place; a crash leaves
    at most an orphan ``_tmp`` folder, never a half-written table at ``path``.
    """
    spark = df.sparkSession
    if fmt == "delta":
        require_delta(spark, f"writing {path}")
        writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        _run_write(lambda: writer.save(path), path)
        return
    if fmt != "parquet":
        raise CurationError(f"output.format: unknown format {fmt!r} (choose delta or parquet)")
    parent, _, name = path.rstrip("/").rpartition("/")
    token = uuid.uuid4().hex[:8]
    tmp = f"{parent}/_tmp_{name}_{token}" if parent else f"_tmp_{name}_{token}"
    old = f"{parent}/_old_{name}_{token}" if parent else f"_old_{name}_{token}"
    writer = df.write.format("parquet").mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    try:
        _run_write(lambda: writer.save(tmp), path)
    except Exception:
        paths.delete(spark, tmp)
        raise
    had_old = paths.exists(spark, path)
    if had_old:
        paths.rename(spark, path, old)
    paths.rename(spark, tmp, path)
    if had_old:
        paths.delete(spark, old)


def table_exists(spark: SparkSession, path: str, fmt: str) -> bool:
    """Whether a complete table of this format is at ``path``."""
    if fmt == "delta":
        return has_delta_commit(spark, path)
    return paths.exists(spark, paths.join(path, "_SUCCESS"))


def has_delta_commit(spark: SparkSession, path: str) -> bool:
    """A Delta table exists once its log holds a commit (a failed first write leaves an
    empty ``_delta_log`` folder, which is no table)."""
    return any(n.endswith(".json") for n in paths.list_names(spark, paths.join(path, "_delta_log")))


def delta_version(spark: SparkSession, path: str) -> int | None:
    """Latest commit version of a Delta table (None if not a Delta table)."""
    if not has_delta_commit(spark, path):
        return None
    return int(spark.sql(f"DESCRIBE HISTORY {delta_path_sql(path)} LIMIT 1").collect()[0]["version"])


def delta_path_sql(path: str) -> str:
    """The Delta table at ``path`` in Spark SQL: ``delta.`path` `` (backticks doubled).

    Spark SQL does not resolve a relative path here (``delta.`runs/x` `` is "table not
    found"), so only qualified paths (:func:`paths.qualify`, done where a path enters) may
    reach it; anything else is a bug of ours, said as such rather than as a missing table."""
    if not paths.is_qualified(path):
        raise CurationError(f"internal error: {path!r} reached Spark SQL unqualified (paths.qualify is skipped "
                            "somewhere); please report it")
    return "delta.`" + path.replace("`", "``") + "`"


def merge_into(target_path: str, source: DataFrame, condition: str, clauses: str) -> None:
    """``MERGE INTO`` the Delta table at ``target_path`` (alias ``t``) from ``source``
    (alias ``s``) in Spark SQL, which classic and Spark Connect sessions both run with only
    Delta's SQL extension (``DeltaTable``'s builder needs Delta's Connect plugin on a server)."""
    spark = source.sparkSession
    view = f"_curation_merge_{uuid.uuid4().hex[:12]}"
    source.createOrReplaceTempView(view)
    try:
        spark.sql(f"MERGE INTO {delta_path_sql(target_path)} AS t USING {view} AS s ON {condition} {clauses}")
    finally:
        spark.catalog.dropTempView(view)


def _run_write(action, path: str) -> None:
    try:
        action()
    except Exception as exc:
        raise CurationError(f"writing {path} failed, nothing was published: {_first_line(exc)}") from exc


def _is_vector(dtype) -> bool:
    try:
        from pyspark.ml.linalg import VectorUDT
    except ImportError:  # pragma: no cover - pyspark.ml always ships with pyspark
        return False
    return isinstance(dtype, VectorUDT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
