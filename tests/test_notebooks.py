"""The Databricks notebooks (notebooks/*.py, source format) run as plain Python scripts.

Outside Databricks there is no ``dbutils``: parameters come from ``CURATION_*`` environment
variables, and the notebooks take the active session -- here the shared ``spark`` fixture's
local session. They run in order 01 (cluster) -> 02 (sample) -> 03 (inspect) on a small
rings table, and their outputs are checked on disk.
"""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import cluster_utils as cu

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

NOTEBOOKS = cu.REPO / "notebooks"
ORDER = ("01_cluster.py", "02_sample.py", "03_inspect_run.py", "04_update.py")
RING_SIZES = (600, 20, 60, 40, 280)  # 1,000 points
TARGET = 100
SETTINGS = ("clustering.n_levels=2; clustering.n_clusters=[20,5]; clustering.n_iters=5; "
            "clustering.n_resampling_steps=[1,1]; clustering.sample_size=[5,2]; clustering.seed=0")


def run_notebook(name: str, env: dict[str, str]) -> dict:
    """Execute a notebook file as a script with ``env`` set; returns its globals."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return runpy.run_path(str(NOTEBOOKS / name), run_name="__main__")


@pytest.fixture(scope="module")
def small_delta_log(spark):
    """Tiny tables: Delta's log replay need not fan out to its default 50 partitions."""
    key = "spark.databricks.delta.snapshotPartitions"
    old = spark.conf.get(key, None)
    spark.conf.set(key, "2")
    yield
    if old is None:
        spark.conf.unset(key)
    else:
        spark.conf.set(key, old)


@pytest.fixture(scope="module")
def notebook_run(spark, small_delta_log, tmp_path_factory):
    """01_cluster then 02_sample on a small rings table; their globals and paths."""
    base = tmp_path_factory.mktemp("notebooks")
    table = cu.write_rings(base / "rings", RING_SIZES, fmt="delta")
    run = base / "run"
    g1 = run_notebook("01_cluster.py", {
        "CURATION_INPUT": str(base / "rings"), "CURATION_RUN": str(run), "CURATION_OVERRIDES": SETTINGS,
    })
    g2 = run_notebook("02_sample.py", {
        "CURATION_RUN": str(run), "CURATION_TARGET_SIZE": str(TARGET), "CURATION_STRATEGY": "r",
        "CURATION_TABLE": "curated_nb", "CURATION_KEEP_COLUMNS": "label",
    })
    return {"base": base, "run": run, "input_ids": table.column("id").to_numpy(), "g1": g1, "g2": g2}


def test_notebooks_are_databricks_source_format():
    for name in ORDER:
        text = (NOTEBOOKS / name).read_text(encoding="utf-8")
        assert text.startswith("# Databricks notebook source\n"), name
        cells = text.split("\n# COMMAND ----------\n")
        assert len(cells) >= 5, name
        assert cells[0].splitlines()[1].startswith("# MAGIC %md"), f"{name}: first cell is prose"
        assert any(c.strip().startswith("# MAGIC %pip install") for c in cells), f"{name}: no %pip cell"
        assert "from curation_spark.notebook import" in text, name
        assert "param(" in text or "run_config_params(" in text, name
        compile(text, name, "exec")


def test_param_uses_widgets_when_dbutils_exists(monkeypatch):
    """On Databricks parameters are widgets (created with their default); locally env vars."""
    import __main__

    from curation_spark import notebook

    class FakeWidgets:
        def __init__(self):
            self.made = {}

        def text(self, name, default):
            self.made[name] = default

        def dropdown(self, name, default, choices):
            self.made[name] = (default, tuple(choices))

        def get(self, name):
            return "from-widget"

    class FakeDbutils:
        widgets = FakeWidgets()

    monkeypatch.setenv("CURATION_X", "from-env")
    assert notebook.param("x", "CURATION_X", "d") == "from-env"
    assert not notebook.on_databricks()
    monkeypatch.setattr(__main__, "dbutils", FakeDbutils(), raising=False)
    assert notebook.param("x", "CURATION_X", "d") == "from-widget"
    assert notebook.param("s", "CURATION_S", "r", ["r", "c"]) == "from-widget"
    assert FakeDbutils.widgets.made == {"x": "d", "s": ("r", ("r", "c"))}
    assert notebook.on_databricks()


def test_01_cluster_writes_the_hierarchy(notebook_run):
    run, g1 = notebook_run["run"], notebook_run["g1"]
    assert g1["ON_DATABRICKS"] is False
    assert g1["stats"].n_rows == sum(RING_SIZES) and g1["stats"].dim == 2
    assert [info.n_clusters for info in g1["run"].levels] == [20, 5]
    for level in (1, 2):
        for kind in ("centroids", "assignments"):
            assert (run / f"level_{level}" / kind / "_delta_log").is_dir()
    assert cu.read_delta(run / "level_1" / "assignments").num_rows == sum(RING_SIZES)
    assert cu.read_delta(run / "level_2" / "centroids").num_rows == 5
    meta = json.loads((run / "run.json").read_text())
    assert [meta["levels"][lv]["status"] for lv in ("1", "2")] == ["complete", "complete"]


def test_02_sample_writes_the_curated_table(notebook_run):
    run, g2 = notebook_run["run"], notebook_run["g2"]
    assert g2["result"].rows == TARGET and g2["curated"].count() == TARGET
    curated = cu.read_delta(run / "curated_nb")
    assert curated.num_rows == TARGET
    ids = curated.column("id").to_numpy()
    assert len(np.unique(ids)) == TARGET and np.isin(ids, notebook_run["input_ids"]).all()
    assert "label" in curated.column_names  # CURATION_KEEP_COLUMNS carried over
    meta = json.loads((run / "run.json").read_text())
    assert meta["samples"]["curated_nb"]["rows"] == TARGET


def test_03_inspect_run_with_report(notebook_run, tmp_path):
    g3 = run_notebook("03_inspect_run.py", {"CURATION_RUN": str(notebook_run["run"]),
                                            "CURATION_REPORT_DIR": str(tmp_path / "report")})
    assert list(g3["level_stats"]["clusters"]) == [20, 5]
    assert list(g3["samples"]["table"]) == ["curated_nb"]
    assert sorted(g3["level_tables"]) == [1, 2]
    assert (tmp_path / "report" / "report.html").is_file()
    assert g3["figures"] and all(Path(f).is_file() for f in g3["figures"])


def test_04_update_takes_new_rows(notebook_run):
    """Last (it changes the run): 100 rows appended by delta-rs are assigned, both curated
    tables are sampled again, the history shows the update."""
    import deltalake

    from curation_spark.synth import make_rings

    rings = notebook_run["base"] / "rings"
    more = make_rings(seed=1, sizes=(40, 10, 20, 10, 20))
    ids = more.column("id").to_numpy() + 10_000
    more = more.set_column(more.schema.get_field_index("id"), "id", pa.array(ids, more.schema.field("id").type))
    deltalake.write_deltalake(str(rings), more, mode="append")
    g4 = run_notebook("04_update.py", {"CURATION_INPUT": str(rings), "CURATION_RUN": str(notebook_run["run"]),
                                       "CURATION_OVERRIDES": SETTINGS})
    assert g4["result"].summary.rows_added == 100 and "+100 rows" in g4["result"].message
    assert list(g4["history"]["added"]) == [100]
    run = notebook_run["run"]
    assert cu.read_delta(run / "level_1" / "assignments").num_rows == sum(RING_SIZES) + 100
    assert cu.read_delta(run / "curated_nb").num_rows == TARGET
