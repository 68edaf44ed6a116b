"""Where the Delta Lake jars of the installed delta-spark come from.

A local session needs ``io.delta:delta-spark_2.13:<version>`` and its runtime dependencies
(``io.delta:delta-storage`` and ``org.antlr:antlr4-runtime`` for 4.0.x) on the JVM's
classpath. Handing Spark the Maven coordinate (``spark.jars.packages``) makes its Ivy
resolver print ~40 lines and re-resolve on every start. Instead we resolve the coordinate
once, with Spark's own resolver in a ``spark-submit`` subprocess whose output goes to a log
file, copy the resulting jars into a cache folder and from then on hand Spark their local
paths (``spark.jars``): no Ivy output and no network on a session start.

Cache location: ``$CURATION_SPARK_JARS/<key>/`` when that variable is set, else
``$XDG_CACHE_HOME/curation-spark/jars/<key>/`` (``~/.cache/...`` without XDG), where
``<key>`` is ``delta-spark_2.13-<version>``. A per-user cache rather than a folder inside
the virtualenv because a virtualenv (or a system/conda Python) may be read-only and is
recreated often (CI), while the jars of one delta-spark version never change; the version in
the folder name keeps virtualenvs with different delta-spark versions apart. Python's
``~`` is used, not Java's ``user.home`` (they differ on some machines), and the resolution
uses its own Ivy home, so ``~/.ivy2.5.2`` is neither needed nor touched.

The cache is written atomically: jars and a manifest (names and sizes) go into a staging
folder next to the cache, which is renamed into place once complete. A folder without a
valid manifest, or whose jars do not match it, is never used (a killed process leaves at
most a staging folder behind, which is ignored and later removed).

``python -m curation_spark.io.delta_jars`` warms the cache and prints its folder
(``scripts/bootstrap.sh`` does this once).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Environment variable naming the cache root (a folder; one sub-folder per delta-spark version).
ENV_VAR = "CURATION_SPARK_JARS"
#: delta-spark 4.x is built for Scala 2.13 only (as delta's own ``configure_spark_with_delta_pip``).
SCALA_VERSION = "2.13"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: Upper bound on one resolution (Ivy waits on unreachable hosts; 8 MB from Maven Central
#: takes seconds).
RESOLVE_TIMEOUT_S = 900
#: Staging folders older than this are leftovers of killed processes and are removed.
STALE_STAGING_S = 24 * 3600
#: User settings forwarded to the resolution (a Maven mirror or a custom Ivy setup).
FORWARDED_CONF = ("spark.jars.repositories", "spark.jars.ivySettings")

_STAGING_PREFIX = ".staging-"

log = logging.getLogger(__name__)


class DeltaJarsError(RuntimeError):
    """The Delta Lake jars could not be resolved; the message is one line naming the log.

    Not a ``CurationError`` on purpose: a session start catches it and falls back to a
    Parquet-only session with a warning.
    """


def delta_version() -> str:
    """The installed delta-spark version (the jars must match the Python package)."""
    try:
        return importlib.metadata.version("delta-spark")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DeltaJarsError("delta-spark is not installed (pip install 'delta-spark>=4.0,<4.1')") from exc


def delta_coordinate(version: str | None = None) -> str:
    """The Maven coordinate of the Delta Lake jar matching ``version`` (default: installed)."""
    return f"io.delta:delta-spark_{SCALA_VERSION}:{version or delta_version()}"


def cache_root() -> Path:
    """The folder holding one cache folder per delta-spark version (see the module doc)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "curation-spark" / "jars"


def cache_dir(version: str | None = None) -> Path:
    """The cache folder of the jars for ``version`` (default: the installed delta-spark)."""
    return cache_root() / f"delta-spark_{SCALA_VERSION}-{version or delta_version()}"


def cached_jars(folder: Path, coordinate: str) -> list[Path] | None:
    """The jars of a complete cache folder for ``coordinate``, else None.

    Complete means: a readable manifest for this coordinate, and every jar it lists present
    with the listed size (a truncated copy or a folder someone emptied is not used).
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if manifest.get("coordinate") != coordinate:
        return None
    listed = manifest.get("jars")
    if not isinstance(listed, dict) or not listed:
        return None
    jars = []
    for name, size in listed.items():
        path = folder / name
        try:
            if path.stat().st_size != size:
                return None
        except OSError:
            return None
        jars.append(path)
    return sorted(jars)


def delta_jars(conf: Mapping[str, str] | None = None) -> list[Path]:
    """Local paths of the Delta Lake jars for the installed delta-spark, resolving them once.

    ``conf`` (the user's ``spark.conf``) only matters on that one resolution: its
    ``spark.jars.repositories`` / ``spark.jars.ivySettings`` are passed on to Ivy.
    Raises :class:`DeltaJarsError` (one line naming the log file) when resolution fails.
    """
    coordinate = delta_coordinate()
    folder = cache_dir()
    jars = cached_jars(folder, coordinate)
    if jars is not None:
        return jars
    log.info("resolving the Delta Lake jars (%s) once into %s; Ivy's log: %s", coordinate, folder, _log_file(folder))
    return _build_cache(folder, coordinate, conf or {})


def _log_file(folder: Path) -> Path:
    """Where the resolution for ``folder`` logs (next to it, kept after success too)."""
    return folder.parent / f"{folder.name}.log"


def _build_cache(folder: Path, coordinate: str, conf: Mapping[str, str]) -> list[Path]:
    """Resolve into a staging folder, write the manifest last, rename into place."""
    root = folder.parent
    log_path = _log_file(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{folder.name}-", dir=root))
        os.chmod(staging, 0o755)  # (mkdtemp's 0700 would hide a shared $CURATION_SPARK_JARS from other users)
    except OSError as exc:
        raise DeltaJarsError(f"cannot create the Delta Lake jar cache in {root} ({exc.strerror or exc}); "
                             f"set {ENV_VAR} to a writable folder") from exc
    try:
        jars = _resolve_with_ivy(coordinate, staging, conf, log_path)
        _write_manifest(staging, coordinate, jars)
        return _publish(staging, folder, coordinate)
    except OSError as exc:  # (disk full, permissions, ...)
        raise DeltaJarsError(f"cannot write the Delta Lake jar cache {folder} ({exc}); log: {log_path}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_manifest(staging: Path, coordinate: str, jars: Sequence[Path]) -> None:
    """The manifest, written last and atomically: its presence marks the folder complete."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "coordinate": coordinate,
        "jars": {jar.name: jar.stat().st_size for jar in sorted(jars)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = staging / f".{MANIFEST}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, staging / MANIFEST)


def _publish(staging: Path, folder: Path, coordinate: str) -> list[Path]:
    """Rename the complete staging folder to ``folder``; a valid folder a concurrent
    process published first is kept, an invalid one is replaced."""
    for _ in range(3):
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.exists():
                raise
            done = cached_jars(folder, coordinate)
            if done is not None:
                return done  # another process won the race (our staging copy is removed)
            aside = folder.with_name(f"{_STAGING_PREFIX}{folder.name}-invalid-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(folder, aside)
            except OSError:
                pass
            shutil.rmtree(aside, ignore_errors=True)
            continue
        jars = cached_jars(folder, coordinate)
        if jars is None:  # (cannot happen unless the folder is changed under us)
            raise DeltaJarsError(f"the Delta Lake jar cache {folder} is incomplete right after writing it")
        return jars
    raise DeltaJarsError(f"could not put the Delta Lake jars in place at {folder}")


def _remove_stale_staging(root: Path) -> None:
    """Best effort: staging folders of processes killed more than a day ago."""
    now = time.time()
    for entry in root.glob(f"{_STAGING_PREFIX}*"):
        try:
            if now - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def _spark_home() -> Path:
    """pyspark's own Spark distribution (its ``bin/spark-submit`` and ``jars``)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise DeltaJarsError("pyspark is not installed, so the Delta Lake jars cannot be resolved")
    return Path(list(spec.submodule_search_locations)[0])


def _resolve_with_ivy(coordinate: str, staging: Path, conf: Mapping[str, str], log_path: Path) -> list[Path]:
    """Run Spark's resolver (``spark-submit --packages`` on an empty Python file) with a
    private, empty Ivy home inside ``staging``; its whole output goes to ``log_path``. Returns the
    jars moved into ``staging``: exactly those of the Ivy home's ``jars`` folder, which is
    what Spark would put on the classpath for the coordinate."""
    spark_home = _spark_home()
    submit = spark_home / "bin" / ("spark-submit.cmd" if os.name == "nt" else "spark-submit")
    work = staging / "resolve"  # Ivy home, an empty conf folder and the no-op app; removed after
    ivy_home = work / "ivy"
    conf_dir = work / "conf"  # empty: a spark-defaults.conf must not add other packages
    conf_dir.mkdir(parents=True)
    noop = work / "noop.py"
    noop.write_text("", encoding="utf-8")
    cmd = [str(submit), "--master", "local[1]", "--packages", coordinate,
           "--conf", f"spark.jars.ivy={ivy_home}", "--conf", "spark.ui.enabled=false"]
    for key in FORWARDED_CONF:
        if conf.get(key):
            cmd += ["--conf", f"{key}={conf[key]}"]
    cmd.append(str(noop))
    env = dict(os.environ)
    for key in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_REMOTE", "PYSPARK_SUBMIT_ARGS"):
        env.pop(key, None)
    env.update(SPARK_HOME=str(spark_home), SPARK_CONF_DIR=str(conf_dir),
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    where = f"{coordinate} with Spark's Ivy resolver"
    try:
        with open(log_path, "w", encoding="utf-8") as out:
            out.write(f"# {' '.join(cmd)}\n")
            out.flush()
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env=env, timeout=RESOLVE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeltaJarsError(f"resolving {where} took over {RESOLVE_TIMEOUT_S} s; log: {log_path}") from exc
    except OSError as exc:
        raise DeltaJarsError(f"could not run {submit} to resolve {where} ({exc.strerror or exc}); "
                             f"log: {log_path}") from exc
    found = sorted((ivy_home / "jars").glob("*.jar"))
    if proc.returncode != 0 or not any(j.name.startswith("io.delta_delta-spark_") for j in found):
        reason = _failure_reason(log_path) or f"spark-submit exited with code {proc.returncode}"
        raise DeltaJarsError(f"could not resolve {where} ({reason}); log: {log_path}")
    moved = []
    for jar in found:  # (same file system: a rename, not a copy)
        os.replace(jar, staging / jar.name)
        moved.append(staging / jar.name)
    shutil.rmtree(work)
    return moved


def _failure_reason(log_path: Path) -> str | None:
    """The most telling line of a failed resolution's log, shortened to one line."""
    try:
        lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    for needle in ("unresolved dependency", ": not found", "Exception:", "Error:"):
        for line in lines:
            if needle in line and not line.startswith("#"):
                line = line.rsplit("Exception: ", 1)[-1]  # drop "Exception in thread "main" java...."
                return line.strip(": []")[:200]
    return None


def main() -> int:
    """Warm the cache; print its folder (exit 1 with one line on stderr if that fails)."""
    try:
        if cached_jars(cache_dir(), delta_coordinate()) is None:
            print(f"resolving {delta_coordinate()} once into {cache_dir()} (Ivy's log: {_log_file(cache_dir())})",
                  file=sys.stderr)
        jars = delta_jars()
    except DeltaJarsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(jars[0].parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
