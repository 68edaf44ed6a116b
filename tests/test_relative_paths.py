"""Every command with relative paths, as the README types them (issue 24: Delta SQL built
from a relative path broke every Delta ``run`` while the suite, all absolute paths, stayed
green). The CLI runs in-process on the shared session, from a fresh folder that is *not*
the JVM's working folder: a path is qualified once, against this process's current
folder, and every layer (Delta SQL, readers, writers, run.json) sees that one string.
"""
from __future__ import annotations

import json
import os

import pytest

from curation_spark import cli
from curation_spark.errors import ConfigError, CurationError
from curation_spark.io import paths
from curation_spark.io.tables import delta_path_sql

pytestmark = pytest.mark.slow

RECIPE = """\
clustering:
  n_levels: 2
  n_clusters: [15, 3]
  n_iters: 3
  n_resampling_steps: 2
  seed: 0
sampling:
  target_size: 120
"""


def _cli(capsys, *argv: str) -> str:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    assert code == 0, f"curation-spark {' '.join(argv)} exited {code}:\n{out.err[-3000:]}"
    return out.out


def _sets(inp: str, out: str, *extra: str) -> list[str]:
    args = ["--set", f"input.path={inp}", "--set", f"output.path={out}"]
    for pair in extra:
        args += ["--set", pair]
    return args


@pytest.fixture(scope="module")
def workdir(spark, tmp_path_factory):
    """A fresh folder with a recipe; the module's tests run with it as current folder."""
    folder = tmp_path_factory.mktemp("relative")
    (folder / "recipe.yaml").write_text(RECIPE)
    return folder


@pytest.fixture
def here(workdir, monkeypatch):
    monkeypatch.chdir(workdir)  # (the JVM's working folder stays the one pytest started in)
    return workdir


def test_every_command_takes_relative_paths(spark, here, capsys, caplog):
    _cli(capsys, "synth", "mixture", "--n", "1500", "--dim", "4", "--components", "5", "--out", "data/mix")
    _cli(capsys, "synth", "mixture", "--n", "1500", "--dim", "4", "--components", "5", "--format", "parquet",
         "--out", "data/mixp")

    out = _cli(capsys, "run", "recipe.yaml", *_sets("data/mix", "runs/delta"))
    assert f"curated table: {here / 'runs/delta/curated'} (120 rows)" in out, out
    meta = json.loads((here / "runs/delta/run.json").read_text())
    assert meta["config"]["input"]["path"] == f"file:{here / 'data/mix'}"  # qualified once, recorded so
    assert meta["config"]["output"]["path"] == f"file:{here / 'runs/delta'}"
    assert meta["input"]["delta_version"] == 0  # DESCRIBE HISTORY on the qualified path
    # default sample sizes: half the mean cluster size (1500/15/2 = 50, 15/3/2 -> 2)
    assert [meta["levels"][str(lv)]["sample_size"] for lv in (1, 2)] == [50, 2]
    assert [len(meta["levels"][str(lv)]["resampling"]) for lv in (1, 2)] == [2, 2]

    # A Parquet input into a Delta run folder: level 2's MERGE of parent ids ran on it.
    out = _cli(capsys, "run", "recipe.yaml", *_sets("data/mixp", "runs/parquet_in"))
    assert "(120 rows)" in out
    parents = spark.read.format("delta").load(str(here / "runs/parquet_in/level_1/centroids"))
    assert parents.where("parent_id is null").count() == 0

    # The same run again, spelled absolute: the same run (resumed, not refused).
    out = _cli(capsys, "run", "recipe.yaml", *_sets(str(here / "data/mix"), str(here / "runs/delta")))
    assert "(120 rows)" in out

    out = _cli(capsys, "sample", "--run", "runs/delta", "--target-size", "60", "--table", "small")
    assert f"curated table: {here / 'runs/delta/small'} (60 rows)" in out
    caplog.clear()
    _cli(capsys, "sample", "--run", "runs/delta", "--target-size", "70", "--table", "small")
    assert any("replacing the curated table small (target 60" in r.getMessage() and "with target 70" in
               r.getMessage() for r in caplog.records)
    out = _cli(capsys, "sample", "--run", "runs/delta", "--target-size", "100000", "--table", "all")
    assert "(1500 rows) -- FEWER THAN THE TARGET 100000" in out, out

    assert "ok: 1500 rows, dimension 4" in _cli(capsys, "validate", "recipe.yaml", "--set", "input.path=data/mix")
    _cli(capsys, "report", "--run", "runs/delta")
    assert (here / "runs/delta/report/report.html").is_file()
    out = _cli(capsys, "update", "recipe.yaml", *_sets("data/mix", "runs/delta"))
    assert "update: nothing to do" in out, out
    out = _cli(capsys, "dedup", "recipe.yaml", *_sets("data/mix", "runs/dedup", "dedup.n_clusters=4"))
    assert f"duplicates: {here / 'runs/dedup/dedup/duplicates'}" in out
    out = _cli(capsys, "cluster", "recipe.yaml", *_sets("data/mix", "runs/cluster_only"))
    assert f"run folder: {here / 'runs/cluster_only'}" in out


def test_a_changed_clustering_config_names_the_keys_that_differ(spark, here, capsys):
    _cli(capsys, "cluster", "recipe.yaml", *_sets("data/mix", "runs/keys", "clustering.n_resampling_steps=0"))
    code = cli.main(["cluster", "recipe.yaml", *_sets("data/mix", "runs/keys", "clustering.n_resampling_steps=0",
                                                        "clustering.n_iters=4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "different clustering config (clustering.n_iters: [3, 3] -> [4, 4])" in err, err


def test_more_clusters_than_rows_is_refused_before_any_work(spark, here, capsys):
    code = cli.main(["cluster", "recipe.yaml", *_sets("data/mix", "runs/too_many", "clustering.n_levels=1",
                                                        "clustering.n_clusters=[5000]")])
    err = capsys.readouterr().err
    assert code == 2 and "clustering.n_clusters: level 1 asks for 5000 clusters but the input has only 1500 rows" \
        in err and err.count("\n") == 1, err
    assert not (here / "runs/too_many").exists()  # refused before the run folder was made
    out = _cli(capsys, "cluster", "recipe.yaml", *_sets("data/mix", "runs/clamped", "clustering.n_levels=1",
                                                          "clustering.n_clusters=[5000]", "clustering.n_iters=1",
                                                          "clustering.n_resampling_steps=0",
                                                          "clustering.clamp_n_clusters=true"))
    assert "level 1: 1500 clusters over 1500 points" in out


@pytest.mark.parametrize("given, expected", [
    ("runs/x", "file:{cwd}/runs/x"), ("./runs/x/", "file:{cwd}/runs/x"), ("/data/t", "file:/data/t"),
    ("file:///data/t/", "file:/data/t"), ("file:relative", "file:{cwd}/relative"),
    ("s3a://bucket/t/", "s3a://bucket/t"), ("abfss://c@acct.dfs.core.windows.net/t", "abfss://c@acct.dfs.core.windows.net/t"),
    ("dbfs:/mnt/t", "dbfs:/mnt/t"), ("~/t", "file:{home}/t"),
])
def test_qualify_without_a_session(given, expected):
    """Before a local session starts (the preflight), against this machine's folders."""
    assert paths.qualify(None, given) == expected.format(cwd=os.getcwd(), home=os.path.expanduser("~"))


def test_qualify_on_the_session_follows_this_process_folder(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.qualify(spark, "runs/x") == f"file:{tmp_path}/runs/x"
    assert paths.qualify(spark, paths.qualify(spark, "runs/x")) == f"file:{tmp_path}/runs/x"  # idempotent
    assert paths.display(paths.qualify(spark, "runs/x")) == f"{tmp_path}/runs/x"


def test_relative_paths_over_a_remote_connect_server_are_refused():
    assert paths.qualify_for_server("runs/x", "output.path", server_is_local=True).endswith("/runs/x")
    assert paths.qualify_for_server("/Volumes/main/t", "input.path", server_is_local=False) == "/Volumes/main/t"
    with pytest.raises(ConfigError, match=r"^output.path: runs/x is a relative path, and over Spark Connect"):
        paths.qualify_for_server("runs/x", "output.path", server_is_local=False)


def test_delta_sql_refuses_an_unqualified_path():
    assert delta_path_sql("file:/a/b`c") == "delta.`file:/a/b``c`"
    with pytest.raises(CurationError, match="reached Spark SQL unqualified"):
        delta_path_sql("runs/demo/rings")
