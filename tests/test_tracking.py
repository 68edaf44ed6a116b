"""MLflow tracking (``tracking.mlflow``) into a real SQLite tracking store in a temp folder:
what a curation logs (params, metrics, ``run.json``, the report), into a new MLflow run or
the active one, from the Python API and the CLI; secrets masked; MLflow missing said
before any work."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import curation_spark as cs
from curation_spark import synth, tracking

mlflow = pytest.importorskip("mlflow")  # (the test extra installs mlflow-skinny)
pytestmark = pytest.mark.slow

SETTINGS = {"sampling": {"target_size": 200},
            "clustering": {"n_levels": 2, "n_clusters": [10, 3], "n_iters": 4, "n_resampling_steps": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite tracking store whose experiments keep their artifacts beside it (a SQLite
    store's default artifact root is ./mlruns in the working folder); MLflow's global URI is
    put back afterwards."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    for name in ("curation-tests", "notebook", "cli"):
        client.create_experiment(name, artifact_location=(folder / "artifacts" / name).as_uri())
    before = mlflow.get_tracking_uri()
    yield uri
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def frame(spark):
    return spark.createDataFrame(synth.make_gaussian_mixture(1500, 6, 5, seed=3))


def _client(uri):
    return mlflow.tracking.MlflowClient(tracking_uri=uri)


def _artifacts(client, run_id, path=None):
    return sorted(f.path for f in client.list_artifacts(run_id, path))


def test_a_run_is_logged_into_a_new_mlflow_run(spark, frame, store, tmp_path):
    config = cs.Config.from_dict({**SETTINGS, "output": {"path": str(tmp_path / "run")},
                                  "spark": {"conf": {"fs.s3a.secret.key": "hunter2"}},
                                  "tracking": {"tracking_uri": store, "experiment": "curation-tests"}})
    run = cs.run(config, frame, spark=spark, mlflow=True)
    client = _client(store)
    experiment = client.get_experiment_by_name("curation-tests")
    assert experiment is not None
    [logged] = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"  # started and ended by us
    params = logged.data.params
    assert params["clustering.n_clusters"] == "[10, 3]" and params["sampling.target_size"] == "200"
    assert params["distance"] == run.distance and "spark.conf" not in params
    assert not any(k.startswith(("spark.", "tracking.")) for k in params)
    metrics = logged.data.metrics
    assert metrics["input.rows"] == 1500 and metrics["input.dim"] == 6
    assert metrics["level_1.n_clusters"] == 10 and metrics["level_2.n_clusters"] == 3
    assert metrics["level_1.n_points"] == 1500 and metrics["level_2.n_points"] == 10
    assert metrics["sample.curated.rows"] == 200 == metrics["sample.curated.target_size"]
    assert metrics["level_1.objective"] == pytest.approx(run.metadata.levels[1].objective)
    assert logged.data.tags["curation_spark.command"] == "run"
    assert logged.data.tags["curation_spark.run_path"] == run.path
    assert _artifacts(client, logged.info.run_id) == ["report", "run.json"]
    assert "report/report.html" in _artifacts(client, logged.info.run_id, "report")
    local = Path(client.download_artifacts(logged.info.run_id, "run.json", str(tmp_path)))
    record = json.loads(local.read_text())
    assert record["config"]["spark"]["conf"] == {"fs.s3a.secret.key": "***"}
    assert record["levels"]["1"]["n_clusters"] == 10
    assert "hunter2" not in local.read_text()


def test_an_active_mlflow_run_is_used_and_a_resample_adds_its_table(spark, frame, store, tmp_path):
    config = cs.Config.from_dict({**SETTINGS, "output": {"path": str(tmp_path / "run")},
                                  "tracking": {"mlflow": True, "tracking_uri": store, "log_report": False}})
    mlflow.set_tracking_uri(store)
    mlflow.set_experiment("notebook")
    with mlflow.start_run(run_name="my training data") as active:
        run = cs.run(config, frame, spark=spark)
        run.sample(50, strategy="c", table="c50")
        assert mlflow.active_run().info.run_id == active.info.run_id  # not ended by us
    logged = _client(store).get_run(active.info.run_id)
    assert logged.data.metrics["sample.curated.rows"] == 200 and logged.data.metrics["sample.c50.rows"] == 50
    assert logged.data.params["sampling.target_size"] == "200"  # a param keeps its first value
    assert logged.data.tags["curation_spark.command"] == "sample"
    assert _artifacts(_client(store), active.info.run_id) == ["run.json"]  # log_report: false
    experiment = _client(store).get_experiment_by_name("notebook")
    assert len(_client(store).search_runs([experiment.experiment_id])) == 1


def test_the_cli_prints_the_mlflow_run(spark, rings_path, store, tmp_path, capsys):
    from curation_spark.cli import main

    out = tmp_path / "run"
    assert main(["run", "--set", f"input.path={rings_path}", "--set", f"output.path={out}",
                 "--set", "clustering.n_levels=1", "--set", "clustering.n_clusters=[20]",
                 "--set", "clustering.n_iters=3", "--set", "clustering.n_resampling_steps=0",
                 "--set", "sampling.target_size=100", "--set", "tracking.mlflow=true",
                 "--set", f"tracking.tracking_uri={store}", "--set", "tracking.experiment=cli",
                 "--set", "tracking.log_report=false"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mlflow run: "))
    logged = _client(store).get_run(line.removeprefix("mlflow run: "))
    assert logged.data.metrics["level_1.n_clusters"] == 20 and logged.data.metrics["sample.curated.rows"] == 100
    assert logged.data.tags["curation_spark.command"] == "run"


def test_tracking_without_mlflow_is_one_line_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError, as when not installed
    config = cs.Config.from_dict({"output": {"path": str(tmp_path / "run")}, "tracking": {"mlflow": True}})
    with pytest.raises(cs.ConfigError, match=r"^tracking\.mlflow: MLflow is not installed here; pip install"):
        cs.run(config, df=object())  # refused before the DataFrame is touched
    assert not (tmp_path / "run").exists()
    tracking.check_available(config.replace(**{"tracking.mlflow": False}))  # off: no import at all


def test_tracking_settings_are_checked():
    with pytest.raises(cs.ConfigError, match=r"^tracking\.experiment: expected a non-empty string"):
        cs.Config.from_dict({"tracking": {"experiment": " "}})
    with pytest.raises(cs.ConfigError, match=r"^tracking\.mlflow"):
        cs.Config.from_dict({"tracking": {"mlflow": "yes please"}})
    masked = tracking.redact_spark_conf({"fs.azure.account.key.acct.dfs.core.windows.net": "k",
                                         "spark.hadoop.fs.s3a.access.key": "a", "spark.sql.shuffle.partitions": 4,
                                         "fs.s3a.session.token": "t", "spark.executor.memory": "1g"})
    assert masked == {"fs.azure.account.key.acct.dfs.core.windows.net": "***", "spark.hadoop.fs.s3a.access.key": "***",
                      "spark.sql.shuffle.partitions": 4, "fs.s3a.session.token": "***", "spark.executor.memory": "1g"}
