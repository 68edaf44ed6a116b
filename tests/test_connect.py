"""Every command over Spark Connect, against pyspark's own Connect server on 127.0.0.1.

The server (``SparkConnectServer`` through ``spark-submit``, ``local[2]``, Delta configured
on the server: what Databricks serverless offers a client) is started once for the module
and stopped after. The commands run as the ``curation-spark`` CLI in client processes with
``SPARK_REMOTE`` set, as a user's job would; their tables are compared with the same
commands run in this test session (classic, in-process), row for row: same ids, same
clusters, bit-equal floats. The k-means levels are forced onto the barrier engine (tiny
levels would otherwise be fit in the driver), whose task count the client reads from the
server's ``spark.master``; one run uses near-duplicate removal and the ``passes`` engine;
a notebook runs as a script against the server.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cluster_utils as cu

pytestmark = pytest.mark.cluster

RING_SIZES = (2000, 20, 100, 50, 800)  # 2,970 points
TARGET = 200
SETTINGS = [
    "clustering.n_levels=2", "clustering.n_clusters=[40,8]", "clustering.n_iters=10",
    "clustering.n_resampling_steps=[2,1]", "clustering.sample_size=[5,2]", "clustering.sampling_strategy=c",
    "clustering.seed=0", f"sampling.target_size={TARGET}", "sampling.multiplier=1",
    "clustering.in_process_max_mb=0",  # tiny levels: force the barrier stages (2 tasks on both sides)
]
CLI = Path(sys.executable).parent / "curation-spark"


def settings(input_path: Path, run_path: Path, *extra: str) -> list[str]:
    return [*SETTINGS, f"input.path={input_path}", f"output.path={run_path}", *extra]


def over_connect(server: cu.ConnectServer, command: str, *args: str, sets: list[str] = (), cwd: Path | None = None) -> str:
    """``curation-spark <command>`` in a client process of ``server`` (in folder ``cwd``);
    returns its output (after checking that it was a Connect client: no local session of
    its own)."""
    argv = [str(CLI), command, *args]
    for pair in sets:
        argv += ["--set", pair]
    result = subprocess.run(argv, env=server.client_env(), capture_output=True, text=True, timeout=900, cwd=cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command} over Spark Connect failed:\n{output[-6000:]}\n" \
                                   f"server log:\n{server.log_tail()}"
    assert f"Spark Connect session on {server.url}" in output, output[-3000:]
    return output


@pytest.fixture(scope="module")
def server(connect_server):
    return connect_server


@pytest.fixture(scope="module")
def runs(server, spark, tmp_path_factory):
    """The toy pipeline (``run``: validate, both levels, the curated table) over Connect and
    classic, each on its own copy of one rings table (so each can be updated later)."""
    from curation_spark import pipeline
    from curation_spark.config import load_config

    base = tmp_path_factory.mktemp("connect_runs")
    cu.write_rings(base / "input_connect", RING_SIZES, fmt="delta")
    shutil.copytree(base / "input_connect", base / "input_classic")
    # Relative paths, as a user types them: the server is on this machine, so they name the
    # client's folders (paths.qualify), for the Delta SQL (history, MERGE) too.
    output = over_connect(server, "run", sets=settings(Path("input_connect"), Path("run_connect")), cwd=base)
    pipeline.run(load_config([], settings(base / "input_classic", base / "run_classic")), spark)
    return {"base": base, "output": output, "connect": base / "run_connect", "classic": base / "run_classic"}


def test_run_over_connect_equals_the_classic_run(runs):
    assert f"curated table: {runs['connect'] / 'curated'} ({TARGET} rows)" in runs["output"], runs["output"]
    meta = json.loads((runs["connect"] / "run.json").read_text())
    # (2 tasks per barrier stage: read from the server's spark.master, local[2], like the
    # classic local[2] test session's defaultParallelism; equal tables need equal counts)
    assert [meta["levels"][lv]["engine"] for lv in ("1", "2")] == ["barrier", "barrier"]
    compared = cu.assert_same_run(runs["connect"], runs["classic"])
    assert compared == ["curated", "level_1/assignments", "level_1/centroids", "level_2/assignments",
                        "level_2/centroids"]


def test_validate_sample_and_report_over_connect(server, spark, runs, tmp_path):
    from curation_spark import pipeline
    from curation_spark.config import load_config

    base = runs["base"]
    out = over_connect(server, "validate", sets=settings(base / "input_connect", runs["connect"]))
    assert "2970" in out, out
    over_connect(server, "sample", "--run", "run_connect", "--target-size", "333", "--strategy", "r",
                 "--seed", "3", "--table", "r333", cwd=base)  # (relative, as in the README)
    pipeline.sample(load_config([], settings(base / "input_classic", runs["classic"], "sampling.target_size=333",
                                             "sampling.strategy=r", "sampling.seed=3")),
                    spark, run_path=str(runs["classic"]), table_name="r333")
    connect_r333 = cu.run_tables(runs["connect"])["r333"]
    assert connect_r333.num_rows == 333
    assert connect_r333.to_pylist() == cu.run_tables(runs["classic"])["r333"].to_pylist()
    report = tmp_path / "report"
    over_connect(server, "report", "--run", str(runs["connect"]), "--out", str(report), "--table", "r333")
    html = (report / "report.html").read_text()
    assert "r333" in html and "Traceback" not in html


def test_update_over_connect_equals_the_classic_update(server, spark, runs):
    """100 rows appended and 30 deleted by delta-rs on both inputs; ``update`` over Connect
    (change data feed not on: the anti-join path; MERGE through Spark SQL) and in-process."""
    import deltalake
    import numpy as np
    import pyarrow as pa

    from curation_spark import pipeline
    from curation_spark.config import load_config

    base = runs["base"]
    rng = np.random.default_rng(7)
    new = pa.table({"id": pa.array(np.arange(10_000, 10_100), pa.int64()),
                    "embedding": pa.array(list(rng.standard_normal((100, 2)).astype(np.float32)),
                                          pa.list_(pa.float32())),
                    "label": pa.array(np.zeros(100, np.int32))})
    for side in ("connect", "classic"):
        path = str(base / f"input_{side}")
        deltalake.write_deltalake(path, new, mode="append")
        deltalake.DeltaTable(path).delete("id < 30")
    out = over_connect(server, "update", sets=settings(Path("input_connect"), Path("run_connect")), cwd=base)
    assert "+100 rows, -30 rows" in out, out
    pipeline.update(load_config([], settings(base / "input_classic", runs["classic"])), spark)
    compared = cu.assert_same_run(runs["connect"], runs["classic"])
    assert "level_1/assignments" in compared and "r333" in compared


def test_dedup_and_the_passes_engine_over_connect(server, spark, runs, tmp_path):
    """``cluster`` with near-duplicate removal and ``engine: passes`` (one Spark job per Lloyd
    iteration, centroids shipped in the tasks' closures), over Connect and classic."""
    from curation_spark import pipeline
    from curation_spark.config import load_config

    base = runs["base"]
    extra = ["clustering.n_levels=1", "clustering.n_clusters=[20]", "clustering.n_iters=[5]",
             "clustering.n_resampling_steps=[0]", "clustering.sample_size=[2]", "clustering.sampling_strategy=[c]",
             "clustering.engine=passes", "dedup.enabled=true", "dedup.threshold=0.9999", "dedup.n_clusters=8"]
    over_connect(server, "cluster", sets=settings(base / "input_connect", tmp_path / "connect", *extra))
    pipeline.cluster(load_config([], settings(base / "input_classic", tmp_path / "classic", *extra)), spark)
    meta = json.loads((tmp_path / "connect" / "run.json").read_text())
    assert meta["levels"]["1"]["engine"] == "passes" and meta["dedup"]["removed"] > 0, meta["dedup"]
    assert cu.assert_same_run(tmp_path / "connect", tmp_path / "classic") == [
        "dedup/duplicates", "level_1/assignments", "level_1/centroids"]


def test_sample_notebook_over_connect(server, runs):
    """notebooks/02_sample.py as a script with ``SPARK_REMOTE`` set: the notebooks take the
    session ``get_spark`` gives them, a Connect one here as on Databricks serverless."""
    env = server.client_env({"CURATION_RUN": str(runs["connect"]), "CURATION_TARGET_SIZE": "50",
                             "CURATION_TABLE": "nb50", "CURATION_KEEP_COLUMNS": "label"})
    result = subprocess.run([sys.executable, str(cu.REPO / "notebooks" / "02_sample.py")], env=env,
                            capture_output=True, text=True, timeout=600, cwd=runs["base"])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    table = cu.run_tables(runs["connect"])["nb50"]
    assert table.num_rows == 50 and "label" in table.column_names
