"""File-system operations on table paths (exists, list, rename, delete, small text files).

Classic sessions go through the JVM's Hadoop FileSystem, so one code path checks, renames
and deletes wherever the cluster's tables live (local disk, HDFS, S3, ABFS, DBFS) with the
cluster's own credentials. A Spark Connect client has no JVM: there the driver-side
``pyarrow.fs`` does it (local paths and Unity Catalog volumes ``/Volumes/...``,
``dbfs:`` through the ``/dbfs`` mount, ``s3://`` / ``s3a://``, ``gs://``, ``abfs[s]://``,
``hdfs://``) with the client machine's credentials. The run folder's files are a
``run.json`` and folders of tables, so these few calls are all the metadata needs.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from curation_spark.errors import ConfigError
from curation_spark.io.spark_api import is_connect, server_is_local

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from pyspark.sql import SparkSession


def _jvm_fs(spark: SparkSession, path: str):
    """(Hadoop FileSystem, Path) on a classic session, (None, None) over Spark Connect."""
    if is_connect(spark):
        return None, None
    jvm = spark.sparkContext._jvm
    jsc = spark.sparkContext._jsc
    hpath = jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]  # classic: the JVM is up
    return hpath.getFileSystem(jsc.hadoopConfiguration()), hpath


def arrow_fs(path: str) -> tuple[pafs.FileSystem, str]:
    """The driver-side file system of ``path`` and the path inside it (Spark Connect)."""
    import pyarrow.fs as pafs

    local = local_path(path)
    if local is not None:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    parsed = urlparse(path)
    uri = "s3://" + path.split("://", 1)[1] if parsed.scheme in ("s3a", "s3n") else path
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... per scheme
        raise ConfigError(f"{path}: this Spark Connect client cannot reach {parsed.scheme}:// paths itself "
                          f"(pyarrow.fs: {str(exc).splitlines()[0][:160]}); run metadata is read and written "
                          "from the client, so give it credentials for this store, or use a Unity Catalog "
                          "volume (/Volumes/...) or a classic session") from exc


def _info(path: str):
    fs, inner = arrow_fs(path)
    return fs, inner, fs.get_file_info(inner)


def _make_parent(afs: pafs.FileSystem, inner: str) -> None:
    """Create the folder ``inner`` goes into (pyarrow does not on write or move)."""
    parent = inner.rstrip("/").rpartition("/")[0]
    if parent:
        afs.create_dir(parent, recursive=True)


def qualify(spark: SparkSession | None, path: str, key: str = "path") -> str:
    """The fully qualified form (scheme + absolute path) of a user's path, resolved once
    where it enters (config, ``--run``, ``--out``) so that every layer -- Spark SQL's
    ``delta.`path` ``, readers and writers, the file system calls, ``run.json`` -- sees one
    string. Spark SQL resolves a relative ``delta.`runs/x` `` against no folder at all, so
    an unqualified path must never reach it.

    A path with a scheme is kept (``file:`` made absolute). A scheme-less one is resolved
    against the session's default file system: on the local disk (a local session, or no
    session yet) relative to this process's current folder (``os.getcwd()``, which a
    notebook may have changed since the JVM started), elsewhere the way Hadoop qualifies
    it (the HDFS / DBFS home folder of a cluster). Over Spark Connect the server resolves paths, so a
    relative path is refused with one line naming ``key`` unless the server runs on this
    machine (loopback); an absolute one is left to the server.
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{key}: expected a path, got {path!r}")
    path = path.strip()
    if path.startswith("~"):
        path = os.path.expanduser(path)
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return "file:" + _absolute(parsed.path or "/")
    if parsed.scheme and not (len(parsed.scheme) == 1 and os.name == "nt"):
        return path if path.endswith(":/") or path.endswith("://") else path.rstrip("/")
    if spark is None:
        return "file:" + _absolute(path)
    if is_connect(spark):
        return qualify_for_server(path, key, server_is_local(spark))
    fs, hpath = _jvm_fs(spark, path)
    if str(fs.getScheme()) == "file":  # the local disk: relative to this process's folder, as in Python
        return "file:" + _absolute(path)  # (the JVM's own working folder stays where it started)
    return str(fs.makeQualified(hpath)).rstrip("/")


def qualify_for_server(path: str, key: str, server_is_local: bool) -> str:
    """A scheme-less path for a Spark Connect server: the client's folder when the server
    runs on this machine; otherwise an absolute path is the server's business and a
    relative one is refused (it would name a folder relative to the server's own)."""
    if server_is_local:
        return "file:" + _absolute(path)
    if os.path.isabs(path):
        return path.rstrip("/") or "/"
    raise ConfigError(f"{key}: {path} is a relative path, and over Spark Connect the server would resolve it "
                      "against a folder of its own; give an absolute path or a URI (/Volumes/..., s3://..., "
                      "abfss://..., dbfs:/...)")


def display(path: str) -> str:
    """A qualified path as a person reads it: local ``file:`` paths without the scheme."""
    local = local_path(path) if urlparse(path).scheme == "file" else None
    return local if local is not None else path


def is_qualified(path: str) -> bool:
    """Whether ``path`` has a scheme or is absolute (what Spark SQL's ``delta.`...` `` needs)."""
    return bool(urlparse(path).scheme) or os.path.isabs(path)


def _absolute(local: str) -> str:
    """An absolute local path without a trailing slash (``/`` stays ``/``)."""
    return os.path.abspath(os.path.expanduser(local)).rstrip("/") or "/"


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
        raise ConfigError(f"output.path: {display(out)} overlaps the input {display(src)}; "
                          "the input is never written to, choose a folder outside it")


def is_same_or_inside(child: str, parent: str) -> bool:
    """Whether ``child`` is ``parent`` or lies below it."""
    c, p = normalise(child), normalise(parent)
    return c == p or c.startswith(p + "/")


def exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        return _info(path)[2].type != pafs.FileType.NotFound
    return bool(fs.exists(hpath))


def is_dir(spark: SparkSession, path: str) -> bool:
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        return _info(path)[2].type == pafs.FileType.Directory
    return bool(fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory())


def has_data_files(spark: SparkSession, path: str) -> bool:
    """Whether a folder holds anything that is not a hidden/marker file."""
    return any(not n.startswith(("_", ".")) for n in list_names(spark, path))


def list_names(spark: SparkSession, path: str) -> list[str]:
    """Names of the entries of a folder ([] if it does not exist)."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        afs, inner, info = _info(path)
        if info.type != pafs.FileType.Directory:
            return []
        return sorted(entry.base_name for entry in afs.get_file_info(pafs.FileSelector(inner)))
    if not fs.exists(hpath):
        return []
    return sorted(str(s.getPath().getName()) for s in fs.listStatus(hpath))


def delete(spark: SparkSession, path: str) -> None:
    """Delete a folder (or file) and everything below it; nothing there is not an error."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        afs, inner, info = _info(path)
        if info.type == pafs.FileType.Directory:
            afs.delete_dir(inner)
        elif info.type == pafs.FileType.File:
            afs.delete_file(inner)
        return
    if fs.exists(hpath):
        fs.delete(hpath, True)


def rename(spark: SparkSession, src: str, dst: str) -> None:
    """Rename a folder (atomic on local disks and HDFS; a copy on object stores)."""
    fs, hsrc = _jvm_fs(spark, src)
    if fs is None:
        afs, inner_src = arrow_fs(src)
        _, inner_dst = arrow_fs(dst)
        _make_parent(afs, inner_dst)
        try:
            afs.move(inner_src, inner_dst)
        except OSError as exc:  # e.g. object stores: pyarrow moves files, not folders
            raise ConfigError(f"{src}: cannot rename it to {dst} from this Spark Connect client ({exc}); "
                              "Parquet run folders are written by renaming a folder: use output.format=delta "
                              "(Delta commits need no rename) on this store") from exc
        return
    hdst = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(dst)  # type: ignore[union-attr]  # classic: the JVM is up
    parent = hdst.getParent()
    if parent is not None and not fs.exists(parent):
        fs.mkdirs(parent)
    if not fs.rename(hsrc, hdst):
        raise OSError(f"could not rename {src} to {dst}")


def read_text(spark: SparkSession, path: str) -> str | None:
    """Small text file (run metadata) or None if it does not exist."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        afs, inner, info = _info(path)
        if info.type != pafs.FileType.File:
            return None
        with afs.open_input_stream(inner) as stream:
            return stream.read().decode("utf-8")
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        jvm = spark.sparkContext._jvm
        data = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")  # type: ignore[union-attr]  # classic: JVM up
    finally:
        stream.close()
    return str(data)


def write_text_atomic(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file by writing a sibling and renaming it over the target."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        afs, inner = arrow_fs(path)
        _make_parent(afs, inner)
        with afs.open_output_stream(inner + ".tmp") as out:
            out.write(text.encode("utf-8"))
        afs.move(inner + ".tmp", inner)  # (replaces the target: os.replace locally, a copy on object stores)
        return
    jvm = spark.sparkContext._jvm
    tmp = jvm.org.apache.hadoop.fs.Path(path + ".tmp")  # type: ignore[union-attr]  # classic: the JVM is up
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(hpath):
        fs.delete(hpath, False)
    if not fs.rename(tmp, hpath):
        raise OSError(f"could not write {path}")


def newest_mtime(spark: SparkSession, path: str, below: tuple[str, ...] = ()) -> float | None:
    """Newest modification time (seconds) of ``path`` and of ``path/<name>`` for ``below``
    (a folder among them: its entries too); None if ``path`` does not exist."""
    fs, hpath = _jvm_fs(spark, path)
    if fs is None:
        import pyarrow.fs as pafs

        afs, inner, info = _info(path)
        if info.type == pafs.FileType.NotFound:
            return None
        times = [info.mtime.timestamp()] if info.mtime is not None else []
        for name in below:
            sub = afs.get_file_info(inner.rstrip("/") + "/" + name)
            if sub.type == pafs.FileType.NotFound:
                continue
            entries = [sub] + (afs.get_file_info(pafs.FileSelector(sub.path))
                               if sub.type == pafs.FileType.Directory else [])
            times.extend(e.mtime.timestamp() for e in entries if e.mtime is not None)
        return max(times) if times else None
    if not fs.exists(hpath):
        return None
    jvm = spark.sparkContext._jvm
    millis = [int(fs.getFileStatus(hpath).getModificationTime())]
    for name in below:
        p = jvm.org.apache.hadoop.fs.Path(join(path, name))  # type: ignore[union-attr]  # classic: the JVM is up
        if fs.exists(p):
            status = fs.getFileStatus(p)
            millis.append(int(status.getModificationTime()))
            if status.isDirectory():
                millis.extend(int(s.getModificationTime()) for s in fs.listStatus(p))
    return max(millis) / 1000.0


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
