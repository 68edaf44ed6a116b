"""File-system operations on table paths through Hadoop's FileSystem API.

Tables may live on a local disk, HDFS, S3 or DBFS; going through the JVM's Hadoop
FileSystem lets one code path check, rename and delete on all of them. Where no JVM
handle exists (Spark Connect) local paths still work through ``os``.
"""
from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from curation_spark.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _jvm_fs(spark: "SparkSession", path: str):
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        jsc = spark.sparkContext._jsc  # type: ignore[attr-defined]
    except AttributeError:  # Spark Connect: no JVM handle
        return None, None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(jsc.hadoopConfiguration()), hpath


def normalise(path: str) -> str:
    """Absolute, scheme-qualified form of a path, for comparing two paths."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme == "file" else path
        return "file://" + os.path.abspath(os.path.expanduser(local)).rstrip("/")
    return path.rstrip("/")


def check_not_overlapping(out: str, src: str) -> None:
    """The run folder must not be, contain, or lie inside the input (one message for the
    check before Spark starts and the one after)."""
    if is_same_or_inside(out, src) or is_same_or_inside(src, out):
        raise ConfigError(f"output.path: {out} overlaps the input {src}; the input is never written to, "
                          "choose a folder outside it")


def is_same_or_inside(child: str, parent: str) -> bool:
    """Whether ``child`` is ``parent`` or lies below it."""
    c, p = normalise(child), normalise(parent)
    return c == p or c.startswith(p + "/")


def exists(spark: "SparkSession", path: str) -> bool:
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        return os.path.exists(_local(path))
    return bool(fs.exists(hpath))


def is_dir(spark: "SparkSession", path: str) -> bool:
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        return os.path.isdir(_local(path))
    return bool(fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory())


def has_data_files(spark: "SparkSession", path: str) -> bool:
    """Whether a folder holds anything that is not a hidden/marker file."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        local = _local(path)
        return os.path.isdir(local) and any(not n.startswith(("_", ".")) for n in os.listdir(local))
    if not fs.exists(hpath):
        return False
    return any(not s.getPath().getName().startswith(("_", ".")) for s in fs.listStatus(hpath))


def list_names(spark: "SparkSession", path: str) -> list[str]:
    """Names of the entries of a folder ([] if it does not exist)."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        local = _local(path)
        return sorted(os.listdir(local)) if os.path.isdir(local) else []
    if not fs.exists(hpath):
        return []
    return sorted(str(s.getPath().getName()) for s in fs.listStatus(hpath))


def delete(spark: "SparkSession", path: str) -> None:
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        shutil.rmtree(_local(path), ignore_errors=True)
        return
    if fs.exists(hpath):
        fs.delete(hpath, True)


def rename(spark: "SparkSession", src: str, dst: str) -> None:
    """Rename a folder (atomic on local disks and HDFS; a copy on object stores)."""
    fs, hsrc = _jvm_fs(spark, src)
    if fs is None:
        os.replace(_local(src), _local(dst))
        return
    hdst = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(dst)  # type: ignore[attr-defined]
    parent = hdst.getParent()
    if parent is not None and not fs.exists(parent):
        fs.mkdirs(parent)
    if not fs.rename(hsrc, hdst):
        raise OSError(f"could not rename {src} to {dst}")


def read_text(spark: "SparkSession", path: str) -> str | None:
    """Small text file (run metadata) or None if it does not exist."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        local = _local(path)
        if not os.path.exists(local):
            return None
        with open(local, encoding="utf-8") as fh:
            return fh.read()
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        data = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    return str(data)


def write_text_atomic(spark: "SparkSession", path: str, text: str) -> None:
    """Write a small text file by writing a sibling and renaming it over the target."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        local = _local(path)
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = local + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, local)
        return
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    tmp = jvm.org.apache.hadoop.fs.Path(path + ".tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(hpath):
        fs.delete(hpath, False)
    if not fs.rename(tmp, hpath):
        raise OSError(f"could not write {path}")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def local_path(path: str) -> str | None:
    """``path`` on the local file system (a plain path, ``file:``, ``dbfs:`` where
    ``/dbfs`` is mounted), or None for a remote scheme (``s3a:``, ``abfss:``, ``hdfs:``, ...)."""
    parsed = urlparse(path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        return path
    if parsed.scheme == "file":
        return parsed.path
    if parsed.scheme == "dbfs" and os.path.isdir("/dbfs"):
        return "/dbfs" + parsed.path
    return None


def _local(path: str) -> str:
    """The path for os/shutil calls when no Hadoop file system is at hand."""
    return local_path(path) or path
