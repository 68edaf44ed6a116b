"""A local session starts quietly: the Delta Lake jars come from a local cache
(io/delta_jars) through ``spark.jars`` with no Ivy run, and faiss's loader does not log its
AVX probing. The cache is only used when complete (manifest written last, folder renamed
into place)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from curation_spark.io import delta_jars as dj
from curation_spark.io import session

COORD = "io.delta:delta-spark_2.13:9.9.9"
FAKE_JARS = {"io.delta_delta-spark_2.13-9.9.9.jar": b"delta" * 100, "io.delta_delta-storage-9.9.9.jar": b"st" * 10}

QUIET_START = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.INFO)  # as the CLI does: INFO lines would show
    import numpy as np
    from curation_spark.config import SparkSettings
    from curation_spark.io.session import get_spark, delta_available
    from curation_spark.method import kernels

    kernels.assign(np.zeros((4, 2), np.float32), np.ones((2, 2), np.float32))  # imports faiss
    s = get_spark(SparkSettings("local[1]", "quiet-start", {"spark.ui.enabled": "false",
                                                           "spark.sql.shuffle.partitions": "1",
                                                           "spark.databricks.delta.snapshotPartitions": "1"}))
    s.range(3).write.format("delta").save(sys.argv[1])
    print(json.dumps({"count": s.read.format("delta").load(sys.argv[1]).count(),
                      "delta": delta_available(s), "jars": s.conf.get("spark.jars", ""),
                      "packages": s.conf.get("spark.jars.packages", "")}))
""")


def test_fresh_process_starts_without_ivy_or_faiss_loader_output(tmp_path):
    jars = dj.delta_jars()  # warm (a no-op after scripts/bootstrap.sh): the child must not resolve
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
                                                            "SPARK_REMOTE", "PYSPARK_SUBMIT_ARGS")}
    script = tmp_path / "start.py"
    script.write_text(QUIET_START)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "t")], capture_output=True, text=True,
                          env=env, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == 3 and out["delta"] is True
    assert out["jars"].split(",") == [str(j) for j in jars]
    assert out["packages"] == ""
    noisy = [line for line in proc.stderr.splitlines()
             if any(word in line.lower() for word in (":: resolving dependencies", "ivy", "spark-packages",
                                                      "swigfaiss", "faiss.loader", "avx"))]
    assert noisy == [], "\n".join(noisy)


def test_shared_session_takes_delta_from_the_jar_cache(spark):
    jars = [str(j) for j in dj.delta_jars()]
    assert spark.conf.get("spark.jars", "").split(",")[:len(jars)] == jars
    assert session.delta_available(spark)


def test_faiss_loader_logs_warnings_only():
    import curation_spark  # noqa: F401 - its import sets the level

    loader = logging.getLogger("faiss.loader")
    assert not loader.isEnabledFor(logging.INFO) and loader.isEnabledFor(logging.WARNING)


# ------------------------------------------------------------------------- the cache itself

@pytest.fixture
def fake_ivy(tmp_path, monkeypatch):
    """The cache under tmp_path for a made-up delta version, resolved by a stand-in for
    Spark's resolver that counts its calls."""
    monkeypatch.setenv(dj.ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(dj, "delta_version", lambda: "9.9.9")
    calls = []

    def resolve(coordinate, staging, conf, log_path):
        calls.append(coordinate)
        log_path.write_text("resolved\n")
        out = []
        for name, data in FAKE_JARS.items():
            (staging / name).write_bytes(data)
            out.append(staging / name)
        return out

    monkeypatch.setattr(dj, "_resolve_with_ivy", resolve)
    return calls


def test_cache_is_resolved_once_and_has_a_manifest(fake_ivy):
    first = dj.delta_jars()
    assert [p.name for p in first] == sorted(FAKE_JARS) and fake_ivy == [COORD]
    folder = dj.cache_dir()
    assert first[0].parent == folder and folder.name == "delta-spark_2.13-9.9.9"
    manifest = json.loads((folder / dj.MANIFEST).read_text())
    assert manifest["coordinate"] == COORD and manifest["jars"] == {k: len(v) for k, v in FAKE_JARS.items()}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FAKE_JARS, dj.MANIFEST])
    assert dj.delta_jars() == first and fake_ivy == [COORD]  # second call: from the cache
    assert not list(folder.parent.glob(".staging-*"))


@pytest.mark.parametrize("damage", ["no_manifest", "truncated_jar", "missing_jar", "other_version", "bad_json"])
def test_an_incomplete_cache_folder_is_not_used_but_replaced(fake_ivy, damage):
    dj.delta_jars()
    folder = dj.cache_dir()
    jar = folder / next(iter(FAKE_JARS))
    manifest = folder / dj.MANIFEST
    if damage == "no_manifest":  # (a copy killed before its manifest was written)
        manifest.unlink()
    elif damage == "truncated_jar":
        jar.write_bytes(b"del")
    elif damage == "missing_jar":
        jar.unlink()
    elif damage == "other_version":
        manifest.write_text(manifest.read_text().replace("9.9.9", "9.9.8"))
    else:
        manifest.write_text('{"format": 1, "coordinate": ')
    assert dj.cached_jars(folder, COORD) is None
    jars = dj.delta_jars()
    assert len(fake_ivy) == 2 and dj.cached_jars(folder, COORD) == jars
    assert jar.read_bytes() == FAKE_JARS[jar.name]


def test_a_killed_resolution_leaves_nothing_that_is_used(fake_ivy, monkeypatch):
    root = dj.cache_root()
    # A process killed after writing everything but before the rename: its staging folder is ignored.
    leftover = root / ".staging-delta-spark_2.13-9.9.9-dead"
    leftover.mkdir(parents=True)
    for name, data in FAKE_JARS.items():
        (leftover / name).write_bytes(data)
    assert dj.cached_jars(dj.cache_dir(), COORD) is None
    # A resolution that fails half-way (interrupted): no cache folder, its staging folder removed.
    good = dj._resolve_with_ivy

    def interrupted(coordinate, staging, conf, log_path):
        (staging / "io.delta_delta-spark_2.13-9.9.9.jar").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(dj, "_resolve_with_ivy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dj.delta_jars()
    assert not dj.cache_dir().exists()
    assert [p.name for p in root.glob(".staging-*")] == [leftover.name]
    # Stale leftovers go on the next resolution.
    os.utime(leftover, (0, 0))
    monkeypatch.setattr(dj, "_resolve_with_ivy", good)
    assert [p.name for p in dj.delta_jars()] == sorted(FAKE_JARS)
    assert not list(root.glob(".staging-*"))


def test_a_failed_resolution_is_one_line_naming_the_log(tmp_path, monkeypatch):
    """Spark's resolver is replaced by a script that fails as Ivy does offline."""
    monkeypatch.setenv(dj.ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(dj, "delta_version", lambda: "9.9.9")
    home = tmp_path / "spark"
    (home / "bin").mkdir(parents=True)
    submit = home / "bin" / "spark-submit"
    submit.write_text("#!/bin/sh\necho ':: resolving dependencies ::'\necho 'Host repo1.maven.org not found.' >&2\n"
                      "echo 'Exception in thread \"main\" java.lang.RuntimeException: [unresolved dependency: "
                      "io.delta#delta-spark_2.13;9.9.9: not found]' >&2\nexit 1\n")
    submit.chmod(0o755)
    monkeypatch.setattr(dj, "_spark_home", lambda: home)
    with pytest.raises(dj.DeltaJarsError) as info:
        dj.delta_jars()
    message = str(info.value)
    log_file = tmp_path / "cache" / "delta-spark_2.13-9.9.9.log"
    assert "\n" not in message and f"log: {log_file}" in message
    assert "unresolved dependency: io.delta#delta-spark_2.13;9.9.9: not found" in message
    assert "Host repo1.maven.org not found." in log_file.read_text()
    assert not (tmp_path / "cache" / "delta-spark_2.13-9.9.9").exists()
    assert not list((tmp_path / "cache").glob(".staging-*"))


def test_cache_location_rule(monkeypatch, tmp_path):
    monkeypatch.setattr(dj, "delta_version", lambda: "4.0.1")
    monkeypatch.setenv(dj.ENV_VAR, str(tmp_path / "jars"))
    assert dj.cache_dir() == tmp_path / "jars" / "delta-spark_2.13-4.0.1"
    monkeypatch.delenv(dj.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dj.cache_dir() == tmp_path / "xdg" / "curation-spark" / "jars" / "delta-spark_2.13-4.0.1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dj.cache_dir() == tmp_path / "home" / ".cache" / "curation-spark" / "jars" / "delta-spark_2.13-4.0.1"


# ------------------------------------------------------------------ user settings win

@pytest.fixture
def cached(monkeypatch):
    monkeypatch.setattr(dj, "delta_jars", lambda conf=None: [Path("/c/a.jar"), Path("/c/b.jar")])


def test_delta_jars_go_on_spark_jars(cached):
    assert session._delta_classpath({}) == {"spark.jars": "/c/a.jar,/c/b.jar"}
    assert session._delta_classpath({"spark.jars": "/mine/x.jar"}) == {"spark.jars": "/c/a.jar,/c/b.jar,/mine/x.jar"}
    # Other packages of the user's stay with Spark's resolver; Delta still comes from the cache.
    assert session._delta_classpath({"spark.jars.packages": "org.example:thing:1.0"}) == \
        {"spark.jars": "/c/a.jar,/c/b.jar"}


def test_a_user_bringing_delta_is_left_alone(cached):
    assert session._delta_classpath({"spark.jars.packages": "org.x:y:1,io.delta:delta-spark_2.13:4.0.0"}) == {}
    assert session._delta_classpath({"spark.jars": "/opt/io.delta_delta-spark_2.13-4.0.0.jar"}) == {}
