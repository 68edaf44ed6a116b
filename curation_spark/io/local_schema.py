"""The schema of a local Parquet or Delta table, read without Spark and without its data.

The preflight (:mod:`curation_spark.io.preflight`) checks the input's columns before the
JVM starts, so a mistyped column name costs a second instead of the ~40 s of a Spark
start. It reads what Spark itself would read to learn the schema, and only that:

* Parquet: the footer of the one file Spark takes the schema from when ``mergeSchema`` is
  off (a ``_common_metadata`` / ``_metadata`` summary file, else the first data file in
  path order), the Spark schema stored in that footer when Spark wrote it (so an ML
  ``Vector`` is a Vector, not its struct), plus the ``key=value`` partition folders.
  Files are found the way Spark lists them (names starting with ``_`` or ``.`` are
  hidden); a data file that is not Parquet is reported, since Spark fails on it.
* Delta: the transaction log -- the newest ``metaData`` action, from the JSON commits
  after the newest checkpoint, else from that checkpoint (read with pyarrow).

Anything this reader does not recognise raises :class:`SchemaUnknown`, and the caller
then leaves the checks to Spark: a preflight must never refuse a table Spark would read.
Types are reduced to a :class:`ColumnKind`, which the schema checks in
:mod:`curation_spark.io.tables` also build from a DataFrame, so both give one message.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["ColumnKind", "LocalSchema", "NoTable", "NotParquetFile", "SchemaUnknown", "detect_format",
           "read_local_schema", "spark_json_kind", "arrow_kind"]

#: Footer key under which Spark stores the (JSON) Spark schema of the rows it wrote.
SPARK_ROW_METADATA = b"org.apache.spark.sql.parquet.row.metadata"
PARQUET_MAGIC = (b"PAR1", b"PARE")  # plain and encrypted-footer Parquet
#: Files not named ``*.parquet`` whose magic bytes are checked; beyond this many, Spark's
#: own read reports any stray file (the preflight stays a footer read on huge folders).
MAX_MAGIC_CHECKS = 64


@dataclass(frozen=True)
class ColumnKind:
    """A column's type reduced to what the schema checks need.

    ``type_string`` is Spark's ``simpleString`` of the type (``array<float>``, ``bigint``,
    ``vector``), or None when only Spark can tell (an inferred partition column, a type
    this reader does not map): a check that fails on such a column says nothing.
    """

    type_string: str | None
    scalar: bool  # a Spark AtomicType: usable as an id
    embedding: bool  # array<float>, array<double> or an ML Vector


@dataclass(frozen=True)
class LocalSchema:
    """The columns of a table as a DataFrame read from it would list them."""

    format: str  # "parquet" or "delta"
    columns: tuple[tuple[str, ColumnKind], ...]
    partition_columns: tuple[str, ...]
    source: str  # the file (or log version) the schema came from, for debug logs

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


class SchemaUnknown(Exception):
    """The files hold something this reader does not understand: leave the checks to Spark."""


class NoTable(Exception):
    """``input.format: auto`` and the folder holds neither data files nor a Delta log."""


class NotParquetFile(Exception):
    """A file Spark would read as Parquet is not one (Spark fails on it)."""

    def __init__(self, relative: str) -> None:
        super().__init__(relative)
        self.relative = relative  # path below the table folder ("" when the input is that file)


# --------------------------------------------------------------------------- types

_UNKNOWN_SCALAR = ColumnKind(None, scalar=True, embedding=False)
_UNKNOWN = ColumnKind(None, scalar=False, embedding=False)

#: Spark JSON type names of atomic types -> their simpleString.
_JSON_ATOMIC = {
    "integer": "int", "long": "bigint", "short": "smallint", "byte": "tinyint", "float": "float",
    "double": "double", "string": "string", "binary": "binary", "boolean": "boolean", "date": "date",
    "timestamp": "timestamp", "timestamp_ntz": "timestamp_ntz", "variant": "variant",
}
_JSON_PATTERNS = (re.compile(r"decimal\(\d+,\s*\d+\)"), re.compile(r"(char|varchar)\(\d+\)"),
                  re.compile(r"interval (year|month|day|hour|minute|second)( to (year|month|day|hour|minute|second))?"))
VECTOR_PY_CLASS = "pyspark.ml.linalg.VectorUDT"


def _array_kind(element: ColumnKind) -> ColumnKind:
    name = f"array<{element.type_string}>" if element.type_string is not None else None
    return ColumnKind(name, scalar=False, embedding=name in ("array<float>", "array<double>"))


def _composite(prefix: str, parts: list[str | None]) -> ColumnKind:
    known = all(p is not None for p in parts)
    return ColumnKind(f"{prefix}<{','.join(parts)}>" if known else None, scalar=False,  # type: ignore[arg-type]  # known: no None
                      embedding=False)


def spark_json_kind(value: Any) -> ColumnKind:
    """The kind of a type in Spark's JSON schema format (Delta's ``schemaString``, the
    footer of a Parquet file Spark wrote)."""
    if isinstance(value, str):
        if value in _JSON_ATOMIC:
            return ColumnKind(_JSON_ATOMIC[value], scalar=True, embedding=False)
        if value == "decimal":
            return ColumnKind("decimal(10,0)", scalar=True, embedding=False)
        if any(p.fullmatch(value) for p in _JSON_PATTERNS):
            return ColumnKind(value.replace(", ", ","), scalar=True, embedding=False)
        if value in ("null", "void"):
            return ColumnKind("void", scalar=False, embedding=False)
        return _UNKNOWN
    if not isinstance(value, dict):
        raise SchemaUnknown(f"type {value!r}")
    tpe = value.get("type")
    if tpe == "array":
        return _array_kind(spark_json_kind(value["elementType"]))
    if tpe == "map":
        return _composite("map", [spark_json_kind(value["keyType"]).type_string,
                                  spark_json_kind(value["valueType"]).type_string])
    if tpe == "struct":
        return _composite("struct", [_field_string(f) for f in value["fields"]])
    if tpe == "udt":
        if value.get("pyClass") == VECTOR_PY_CLASS:
            return ColumnKind("vector", scalar=False, embedding=True)
        return _UNKNOWN  # another UDT: Python names it after its own class
    raise SchemaUnknown(f"type {value!r}")


def _field_string(field: dict) -> str | None:
    kind = _spark_field_kind(field)
    return f"{field['name']}:{kind.type_string}" if kind.type_string is not None else None


def _spark_field_kind(field: dict) -> ColumnKind:
    kind = spark_json_kind(field["type"])
    if "__COLLATIONS" in json.dumps(field.get("metadata") or {}):  # a collated string: Spark names it
        return ColumnKind(None, kind.scalar, kind.embedding)
    return kind


def _spark_struct_columns(schema: Any) -> list[tuple[str, ColumnKind]]:
    if not isinstance(schema, dict) or schema.get("type") != "struct" or not isinstance(schema.get("fields"), list):
        raise SchemaUnknown("the schema is not a struct")
    return [(str(f["name"]), _spark_field_kind(f)) for f in schema["fields"]]


def arrow_kind(dtype: Any) -> ColumnKind:
    """The kind of an Arrow type read from a Parquet footer Spark did not write, named as
    Spark's Parquet reader names it (unsigned integers widen; timestamps and other types
    whose Spark type depends on settings are left unnamed)."""
    import pyarrow as pa
    import pyarrow.types as pt

    simple = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
              pa.uint8(): "smallint", pa.uint16(): "int", pa.uint32(): "bigint", pa.uint64(): "decimal(20,0)",
              pa.float32(): "float", pa.float64(): "double", pa.bool_(): "boolean", pa.date32(): "date",
              pa.date64(): "date"}
    if isinstance(dtype, pa.BaseExtensionType):  # (json, uuid, tensors, ...: Spark reads the storage type)
        storage = arrow_kind(dtype.storage_type)
        return ColumnKind(None, storage.scalar, False)
    if pt.is_dictionary(dtype):
        return arrow_kind(dtype.value_type)
    if dtype in simple:
        return ColumnKind(simple[dtype], scalar=True, embedding=False)
    if pt.is_string(dtype) or pt.is_large_string(dtype) or getattr(pt, "is_string_view", lambda _: False)(dtype):
        return ColumnKind("string", scalar=True, embedding=False)
    if (pt.is_binary(dtype) or pt.is_large_binary(dtype) or pt.is_fixed_size_binary(dtype)
            or getattr(pt, "is_binary_view", lambda _: False)(dtype)):
        return ColumnKind("binary", scalar=True, embedding=False)
    if pt.is_decimal(dtype):
        return ColumnKind(f"decimal({dtype.precision},{dtype.scale})" if dtype.precision <= 38 else None,
                          scalar=True, embedding=False)
    if pt.is_list(dtype) or pt.is_large_list(dtype) or pt.is_fixed_size_list(dtype) or (
            getattr(pt, "is_list_view", lambda _: False)(dtype)):
        return _array_kind(arrow_kind(dtype.value_type))
    if pt.is_map(dtype):
        return _composite("map", [arrow_kind(dtype.key_type).type_string, arrow_kind(dtype.item_type).type_string])
    if pt.is_struct(dtype):
        fields = [dtype.field(i) for i in range(dtype.num_fields)]
        parts = [f"{f.name}:{k.type_string}" if (k := arrow_kind(f.type)).type_string is not None else None
                 for f in fields]
        return _composite("struct", parts)
    if pt.is_null(dtype):
        return _UNKNOWN
    if pt.is_temporal(dtype) or pt.is_floating(dtype):  # timestamps, times, durations, float16
        return _UNKNOWN_SCALAR
    return _UNKNOWN


def _footer_columns(path: str) -> list[tuple[str, ColumnKind]]:
    """Columns of one Parquet file from its footer: the Spark schema Spark stored there,
    else the Parquet schema (as Spark does)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    stored = (schema.metadata or {}).get(SPARK_ROW_METADATA)
    if stored is not None:
        try:
            return _spark_struct_columns(json.loads(stored))
        except (ValueError, KeyError, TypeError, SchemaUnknown):
            pass  # Spark falls back to the Parquet schema too
    return [(field.name, arrow_kind(field.type)) for field in schema]


# --------------------------------------------------------------------------- format


def _log_names(folder: str) -> list[str]:
    log_dir = os.path.join(folder, "_delta_log")
    return os.listdir(log_dir) if os.path.isdir(log_dir) else []


def detect_format(folder: str) -> str:
    """``delta`` if ``_delta_log`` holds a commit, else ``parquet``; :class:`NoTable` for a
    folder with neither (the rule of :func:`curation_spark.io.tables.detect_format`)."""
    if any(n.endswith(".json") for n in _log_names(folder)):
        return "delta"
    if os.path.isdir(folder) and not any(not n.startswith(("_", ".")) for n in os.listdir(folder)):
        raise NoTable(folder)
    return "parquet"


def read_local_schema(path: str, fmt: str = "auto", *, ignore_corrupt_files: bool = False,
                      case_sensitive: bool = False, merge_schema: bool = False) -> LocalSchema:
    """The schema Spark would give the table at local ``path`` read as ``fmt``
    (``auto``/``parquet``/``delta``). Raises :class:`SchemaUnknown` when unsure,
    :class:`NoTable` and :class:`NotParquetFile` for what Spark refuses too. The flags
    mirror ``spark.sql.files.ignoreCorruptFiles``, ``spark.sql.caseSensitive`` and
    ``spark.sql.parquet.mergeSchema`` (the union of every footer: left to Spark)."""
    try:
        if fmt == "auto":
            fmt = detect_format(path)
        if fmt == "delta":
            return read_delta_schema(path)
        if fmt == "parquet":
            if merge_schema:
                raise SchemaUnknown("spark.sql.parquet.mergeSchema is on: the schema is every file's")
            return read_parquet_schema(path, ignore_corrupt_files=ignore_corrupt_files, case_sensitive=case_sensitive)
    except (SchemaUnknown, NoTable, NotParquetFile):
        raise
    except Exception as exc:  # unreadable file, bad JSON, missing key, pyarrow error ...
        raise SchemaUnknown(f"{type(exc).__name__}: {exc}") from exc
    raise SchemaUnknown(f"format {fmt!r}")


# --------------------------------------------------------------------------- Parquet


def _hidden(name: str) -> bool:
    """Spark's listing filter: ``_``/``.`` names (bar ``_x=y`` partition folders and the
    ``_metadata`` / ``_common_metadata`` summary files) and files still being copied."""
    excluded = (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")
    return excluded and not name.startswith(("_common_metadata", "_metadata"))


def _list_files(folder: str) -> Iterator[tuple[str, int]]:
    """(path relative to ``folder`` with ``/``, size) of every file Spark lists below it."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(folder, rel) if rel else folder) as entries:
            for entry in entries:
                if _hidden(entry.name):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir():
                    stack.append(child)
                elif entry.is_file():
                    yield child, entry.stat().st_size


def _partition_names(leaf_dir: str) -> tuple[str, ...]:
    """Partition column names of a leaf folder (relative), walked up as Spark does: folders
    without ``=`` are passed over until the first ``k=v``, then end the walk."""
    names: list[str] = []
    for part in reversed(leaf_dir.split("/") if leaf_dir else []):
        if "=" not in part:
            if names:
                break
            continue
        key, _, value = part.partition("=")
        if not key or not value:
            raise SchemaUnknown(f"partition folder {part!r}")
        names.append(_unescape(key))
    return tuple(reversed(names))


def _unescape(name: str) -> str:
    """A partition folder's column name as Spark reads it (``%XX`` escapes decoded)."""
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), name)


def _is_parquet(path: str, size: int) -> bool:
    if size < 12:  # magic + footer length + magic
        return False
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-4, os.SEEK_END)
        tail = f.read(4)
    return head in PARQUET_MAGIC and tail in PARQUET_MAGIC


def read_parquet_schema(path: str, *, ignore_corrupt_files: bool = False, case_sensitive: bool = False) -> LocalSchema:
    """The schema of a Parquet file or folder from one footer (see the module doc)."""
    if os.path.isfile(path):
        if not _is_parquet(path, os.path.getsize(path)):
            raise NotParquetFile("")
        return LocalSchema("parquet", tuple(_footer_columns(path)), (), path)
    files = sorted(_list_files(path))  # Spark sorts by path before picking the schema file
    summaries = {name: [rel for rel, _ in files if rel.rpartition("/")[2] == name]
                 for name in ("_common_metadata", "_metadata")}
    data = [(rel, size) for rel, size in files if rel.rpartition("/")[2] not in summaries]
    if not data:
        raise SchemaUnknown("no data files")
    leaf_partitions = {_partition_names(rel.rpartition("/")[0]) for rel, _ in data}
    if len(leaf_partitions) != 1:
        raise SchemaUnknown(f"partition folders disagree: {sorted(leaf_partitions)}")
    partitions = leaf_partitions.pop()
    if len(set(partitions)) != len(partitions):
        raise SchemaUnknown(f"repeated partition column in {partitions}")
    schema_file = (summaries["_common_metadata"] or summaries["_metadata"] or [data[0][0]])[0]
    if schema_file == data[0][0] and not _is_parquet(os.path.join(path, schema_file), data[0][1]):
        if ignore_corrupt_files:
            raise SchemaUnknown(f"{schema_file} is not Parquet (ignoreCorruptFiles)")
        raise NotParquetFile(schema_file)  # Spark cannot infer the schema from it
    if not ignore_corrupt_files:
        _check_other_files(path, data[1:])
    columns = _footer_columns(os.path.join(path, schema_file))
    return LocalSchema("parquet", _with_partitions(columns, partitions, case_sensitive), partitions, schema_file)


def _check_other_files(folder: str, data: list[tuple[str, int]]) -> None:
    """Spark reads every listed file as Parquet and fails on one that is not: open those
    not named ``*.parquet`` (a stray README) and check their magic bytes. Empty files are
    skipped by Spark's scan, so they are skipped here."""
    checked = 0
    for rel, size in data:
        if size == 0 or rel.endswith(".parquet"):
            continue
        if checked >= MAX_MAGIC_CHECKS:
            return
        checked += 1
        if not _is_parquet(os.path.join(folder, rel), size):
            raise NotParquetFile(rel)


def _with_partitions(columns: list[tuple[str, ColumnKind]], partitions: tuple[str, ...],
                     case_sensitive: bool) -> tuple[tuple[str, ColumnKind], ...]:
    """Data columns then partition columns; a partition column that is also a data column
    takes the data column's place (Spark's merge of the two schemas)."""
    def key(name: str) -> str:
        return name if case_sensitive else name.lower()

    data_keys = {key(n): n for n, _ in columns}
    overlap = {key(p) for p in partitions if key(p) in data_keys}
    if any(data_keys[key(p)] != p for p in partitions if key(p) in overlap):
        raise SchemaUnknown("a partition column matches a data column in another case")
    merged = [(n, _UNKNOWN_SCALAR if key(n) in overlap else kind) for n, kind in columns]
    merged += [(p, _UNKNOWN_SCALAR) for p in partitions if key(p) not in overlap]
    return tuple(merged)


# --------------------------------------------------------------------------- Delta

_COMMIT = re.compile(r"(\d{20})\.json")
_CLASSIC_CHECKPOINT = re.compile(r"(\d{20})\.checkpoint\.parquet")
_MULTIPART_CHECKPOINT = re.compile(r"(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet")
_V2_CHECKPOINT = re.compile(r"(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)")


def _checkpoints(names: list[str]) -> dict[int, list[str]]:
    """Complete checkpoints of a log listing: version -> the files holding it."""
    found: dict[int, list[str]] = {}
    parts: dict[tuple[int, int], set[int]] = {}
    for name in names:
        if m := _CLASSIC_CHECKPOINT.fullmatch(name):
            found[int(m[1])] = [name]
        elif m := _V2_CHECKPOINT.fullmatch(name):
            found.setdefault(int(m[1]), [name])
        elif m := _MULTIPART_CHECKPOINT.fullmatch(name):
            parts.setdefault((int(m[1]), int(m[3])), set()).add(int(m[2]))
    for (version, total), seen in parts.items():
        if version not in found and seen == set(range(1, total + 1)):
            found[version] = [f"{version:020d}.checkpoint.{i:010d}.{total:010d}.parquet" for i in range(1, total + 1)]
    return found


def _commit_metadata(path: str) -> dict | None:
    """The ``metaData`` action of one JSON commit, if it has one."""
    found = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"metaData"' in line:
                action = json.loads(line)
                if isinstance(action, dict) and "metaData" in action:
                    found = action["metaData"]
    return found


def _checkpoint_metadata(log_dir: str, files: list[str]) -> dict | None:
    """The ``metaData`` action of a checkpoint (classic, multi-part or V2 top-level file)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for name in files:
        path = os.path.join(log_dir, name)
        if name.endswith(".json"):
            if (found := _commit_metadata(path)) is not None:
                return found
            continue
        column = pq.read_table(path, columns=["metaData"]).column("metaData")
        present = column.filter(pc.is_valid(column)).to_pylist()
        if present:
            return present[-1]
    return None


def read_delta_schema(folder: str) -> LocalSchema:
    """The schema of a Delta table from its newest ``metaData`` action: the commits after
    the newest checkpoint, newest first, else that checkpoint. Column mapping keeps the
    logical names in ``schemaString``, which are the ones a DataFrame shows."""
    log_dir = os.path.join(folder, "_delta_log")
    names = os.listdir(log_dir)
    for managed in ("_staged_commits", "_commits"):  # commits a catalog or coordinator may own
        sub = os.path.join(log_dir, managed)
        if os.path.isdir(sub) and any(n.endswith(".json") for n in os.listdir(sub)):
            raise SchemaUnknown(f"{managed} holds commits")
    commits = {int(m[1]): n for n in names if (m := _COMMIT.fullmatch(n))}
    checkpoints = _checkpoints(names)
    if not commits and not checkpoints:
        raise SchemaUnknown("no commits")
    latest = max([*commits, *checkpoints])
    checkpoint = max(checkpoints, default=None)
    if "_last_checkpoint" in names:
        with open(os.path.join(log_dir, "_last_checkpoint"), encoding="utf-8") as f:
            hint = int(json.load(f)["version"])
        if hint not in checkpoints or hint > latest:
            raise SchemaUnknown(f"_last_checkpoint names version {hint}, which the log does not hold")
    metadata, source = None, ""
    for version in range(latest, (checkpoint if checkpoint is not None else -1), -1):
        if version not in commits:
            raise SchemaUnknown(f"commit {version} is missing")
        metadata = _commit_metadata(os.path.join(log_dir, commits[version]))
        if metadata is not None:
            source = f"_delta_log/{commits[version]}"
            break
    if metadata is None and checkpoint is not None:
        metadata = _checkpoint_metadata(log_dir, checkpoints[checkpoint])
        source = f"_delta_log/{checkpoints[checkpoint][0]}"
    if not isinstance(metadata, dict):
        raise SchemaUnknown("no metaData action")
    return _delta_columns(metadata, source)


def _delta_columns(metadata: dict, source: str) -> LocalSchema:
    provider = (metadata.get("format") or {}).get("provider", "parquet")
    if provider != "parquet":
        raise SchemaUnknown(f"format provider {provider!r}")
    configuration = metadata.get("configuration") or {}
    if isinstance(configuration, list):  # a checkpoint's map column reads as (key, value) pairs
        configuration = dict(configuration)
    if any("coordinatedCommits" in k or "catalogOwned" in k or "catalogManaged" in k for k in configuration):
        raise SchemaUnknown("commits are owned by a coordinator or catalog")
    columns = _spark_struct_columns(json.loads(metadata["schemaString"]))
    # Delta drops void columns from what it reads.
    columns = [(n, k) for n, k in columns if k.type_string != "void"]
    partitions = tuple(str(p) for p in metadata.get("partitionColumns") or ())
    return LocalSchema("delta", tuple(columns), partitions, source)
