"""io/spark_api: the choices made for a Spark Connect session, on a stand-in client (what a
real server does with them is tests/test_connect.py's business) and on the classic test
session."""
from __future__ import annotations

import numpy as np
import pytest

from curation_spark.errors import ConfigError
from curation_spark.io import spark_api


class _Conf:
    def __init__(self, values: dict[str, str], hidden: tuple[str, ...] = ()) -> None:
        self.values, self.hidden = values, hidden

    def get(self, key, default=None):
        if key in self.hidden:
            raise RuntimeError(f"[CONFIG_NOT_AVAILABLE] {key}")
        return self.values.get(key, default)


class _ConnectClient:
    """What the code sees of a Connect session: its type's module, conf, tags."""

    def __init__(self, conf: dict[str, str], hidden: tuple[str, ...] = ()) -> None:
        self.conf = _Conf(conf, hidden)
        self.session_id = f"s{id(self)}"
        self.tags: list[str] = []

    def clearTags(self) -> None:  # noqa: N802 - the pyspark name
        self.tags.clear()

    def addTag(self, tag: str) -> None:  # noqa: N802
        assert tag and "," not in tag
        self.tags.append(tag)


_ConnectClient.__module__ = "pyspark.sql.connect.session"


def test_session_kind(spark):
    assert not spark_api.is_connect(spark)
    assert spark_api.is_connect(_ConnectClient({}))


@pytest.mark.parametrize("conf, slots", [
    ({"spark.default.parallelism": "48", "spark.master": "local[2]"}, 48),
    ({"spark.master": "local[3]"}, 3), ({"spark.master": "local"}, 1), ({"spark.master": "local[4,2]"}, 4),
    ({"spark.master": "spark://h:7077", "spark.executor.instances": "10", "spark.executor.cores": "8"}, 80),
    ({"spark.master": "spark://h:7077"}, None), ({}, None)])
def test_task_slots_from_the_servers_settings(conf, slots):
    assert spark_api.task_slots(_ConnectClient(conf)) == slots


def test_hidden_settings_mean_unknown_slots():
    client = _ConnectClient({"spark.master": "local[2]"}, hidden=("spark.master", "spark.default.parallelism"))
    assert spark_api.task_slots(client) is None
    assert spark_api.master(client) == ""


def test_classic_session_uses_its_context(spark):
    assert spark_api.task_slots(spark) == spark.sparkContext.defaultParallelism
    assert spark_api.master(spark) == spark.sparkContext.master
    shipped = spark_api.ship(spark, np.ones((3, 2), np.float32), "test")
    assert shipped.value.shape == (3, 2)  # a broadcast variable
    shipped.unpersist()


def test_values_ride_in_the_closure_over_connect_up_to_a_limit():
    client = _ConnectClient({})
    small = np.zeros((1000, 128), np.float32)
    assert spark_api.ship(client, (small, small), "level 1: the centroids").value[0] is small
    too_big = np.zeros((spark_api.CONNECT_CLOSURE_MAX_BYTES // (128 * 4) + 1, 128), np.float32)
    with pytest.raises(ConfigError, match=r"level 1: the centroids: 64 MiB to ship to every task.*classic session"):
        spark_api.ship(client, too_big, "level 1: the centroids")


def test_work_is_named_by_one_tag_over_connect():
    client = _ConnectClient({})
    spark_api.describe_work(client, "level 1 · k-means K=40, 10 iterations")
    spark_api.describe_work(client, "sampling · level-1 selection")
    assert client.tags == ["sampling · level-1 selection"]
    spark_api.describe_work(client, None)
    assert client.tags == []


def test_run_folder_files_through_pyarrow_on_a_connect_client(tmp_path):
    """io/paths on a Connect client (no JVM): the driver-side pyarrow.fs layer, local paths."""
    from curation_spark.io import paths

    client, base = _ConnectClient({}), str(tmp_path)
    paths.write_text_atomic(client, f"{base}/run/run.json", '{"a": 1}')
    paths.write_text_atomic(client, f"{base}/run/run.json", '{"a": 2}')  # replaces
    assert paths.read_text(client, f"{base}/run/run.json") == '{"a": 2}'
    assert paths.read_text(client, f"{base}/run/missing.json") is None
    assert paths.is_dir(client, f"{base}/run") and paths.list_names(client, f"{base}/run") == ["run.json"]
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "_SUCCESS").write_text("")
    assert not paths.has_data_files(client, f"{base}/table")
    (tmp_path / "table" / "part-0.parquet").write_text("")
    assert paths.has_data_files(client, f"file://{base}/table")
    assert paths.newest_mtime(client, f"{base}/table", ("_SUCCESS", "_delta_log")) is not None
    paths.rename(client, f"{base}/table", f"{base}/moved/table")
    assert not paths.exists(client, f"{base}/table") and paths.list_names(client, f"{base}/moved/table") == [
        "_SUCCESS", "part-0.parquet"]
    paths.delete(client, f"{base}/moved")
    paths.delete(client, f"{base}/moved")  # nothing there: no error
    assert not paths.exists(client, f"{base}/moved") and paths.newest_mtime(client, f"{base}/moved") is None
