"""run.json through its one validated path (:mod:`curation_spark.io.run_metadata`): typed
objects in and out, one error naming the file and the dotted key for anything else."""
from __future__ import annotations

import json

import pytest

from curation_spark.config import load_config, resolve_distance
from curation_spark.errors import CurationError
from curation_spark.io.run_metadata import InputIdentity, LevelStats, RunMetadata, SampleSummary


def _metadata() -> RunMetadata:
    config = load_config([], ["input.path=/data/in", "output.path=/data/run", "clustering.n_levels=2",
                                 "clustering.n_clusters=[4,2]"])
    level = LevelStats(level=1, n_points=10, n_clusters_requested=4, n_clusters=4, engine="in-process",
                       objective_kmeans=1.5, sizes_kmeans={"min": 1, "max": 4, "gini": 0.2},
                       sizes_kmeans_histogram={"edges": [0, 1], "counts": [4]},
                       kmeans_history=[{"iteration": 1, "objective": 1.5}], objective=1.25,
                       sizes={"min": 2, "median": 2.5, "max": 3, "gini": 0.1, "largest_share": 0.3},
                       seconds=0.5, status="complete")
    sample = SampleSummary(target_size=3, multiplier=1, strategy="r", seed=0, expected_rows=3, rows=3,
                           path="/data/run/curated", seconds=1.0)
    return RunMetadata(fingerprint=config.clustering_fingerprint(), config=config, output_format="delta",
                       input=InputIdentity(n_rows=10, dim=2, delta_version=None, distance="l2"),
                       levels={1: level}, samples={"curated": sample}, updated="2026-12-01T00:00:00Z")


def test_round_trip_is_exact():
    meta = _metadata()
    again = RunMetadata.from_json(meta.to_json(), "run.json")
    assert again == meta
    assert again.levels[1].complete and again.levels[1].n_splits == 1 and again.distance == "l2"
    assert json.loads(again.to_json()) == json.loads(meta.to_json())


def test_unknown_keys_survive_a_rewrite():
    data = json.loads(_metadata().to_json())
    data["levels"]["1"]["from_a_newer_version"] = {"x": 1}
    data["written_by"] = "curation-spark 9"
    again = RunMetadata.from_dict(data, "run.json")
    assert again.levels[1].extra == {"from_a_newer_version": {"x": 1}}
    out = json.loads(again.to_json())
    assert out["levels"]["1"]["from_a_newer_version"] == {"x": 1} and out["written_by"] == "curation-spark 9"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["levels"]["1"].pop("n_points"), r"run.json: levels.1.n_points: missing"),
    (lambda d: d["levels"]["1"].update(n_clusters="4"), r"levels.1.n_clusters: expected int, got '4'"),
    (lambda d: d["levels"]["1"].update(degenerate=1), r"levels.1.degenerate: expected bool, got 1"),
    (lambda d: d["samples"]["curated"].update(rows=None), r"samples.curated.rows: expected int, got None"),
    (lambda d: d["input"].update(dim=2.5), r"input.dim: expected int or NoneType, got 2.5"),
    (lambda d: d["config"]["clustering"].update(n_iters=-1), r"run.json: its config is not valid: clustering.n_iters"),
    (lambda d: d["config"]["clustering"].update(no_such_key=1), r"its config is not valid: clustering.no_such_key"),
    (lambda d: d.pop("fingerprint"), r"run.json: missing 'fingerprint'"),
    (lambda d: d["levels"].update(first={}), r"levels.first: expected a level number"),
])
def test_bad_metadata_is_one_error_naming_the_key(edit, message):
    data = json.loads(_metadata().to_json())
    edit(data)
    with pytest.raises(CurationError, match=message):
        RunMetadata.from_dict(data, "run.json")


def test_not_json_is_refused():
    with pytest.raises(CurationError, match=r"/x/run.json: not valid JSON"):
        RunMetadata.from_json("{levels", "/x/run.json")


def test_ints_are_accepted_for_floats():
    data = json.loads(_metadata().to_json())
    data["levels"]["1"]["objective"] = 2
    assert RunMetadata.from_dict(data, "run.json").levels[1].objective == 2.0


@pytest.mark.parametrize("requested, lo, hi, expected", [
    ("auto", 0.999, 1.001, "cosine"), ("auto", 0.995, 1.0, "cosine"), ("auto", 0.5, 1.0, "l2"),
    ("auto", 1.0, 1.2, "l2"), ("auto", None, None, "l2"), ("l2", 1.0, 1.0, "l2"), ("cosine", 3.0, 9.0, "cosine")])
def test_resolve_distance(requested, lo, hi, expected):
    assert resolve_distance(requested, lo, hi) == expected


def _with_update(recluster_due: bool) -> RunMetadata:
    from curation_spark.io.run_metadata import DriftBaseline, DriftCheck, UpdateSummary

    meta = _metadata()
    drift = DriftCheck(new_rows=5, new_mean_distance=0.6, old_mean_distance=0.5, old_p99_distance=1.0,
                       share_beyond_p99=0.2 if recluster_due else 0.0, threshold=0.05, recluster_due=recluster_due)
    meta.updates.append(UpdateSummary(from_version=3, to_version=5, method="change-data-feed", rows_read=7,
                                      rows_added=5, rows_deleted=2, rows_changed=0, n_points=13, samples=["curated"],
                                      staged="/data/run/_update", started="2026-12-01T00:00:00Z", seconds=2.5,
                                      phases={"assign": 1.0}, drift=drift, status="complete"))
    meta.drift_baseline = DriftBaseline(rows=10, mean_distance=0.5, p99_distance=1.0)
    return meta


def test_updates_round_trip_with_their_drift():
    meta = _with_update(recluster_due=True)
    back = RunMetadata.from_json(meta.to_json(), "run.json")
    assert back == meta and back.updates[0].drift.mean_ratio == pytest.approx(1.2)
    data = json.loads(meta.to_json())
    data["updates"][0]["drift"]["share_beyond_p99"] = "high"
    with pytest.raises(CurationError, match=r"updates\.0\.drift\.share_beyond_p99: expected float"):
        RunMetadata.from_dict(data, "run.json")


@pytest.mark.parametrize("due", [False, True])
def test_report_shows_the_last_update_and_warns_on_drift(due):
    from curation_spark.report.html import update_fact, update_note

    assert update_fact(_metadata()) == "(none since the fit)" and update_note(_metadata()) is None
    meta = _with_update(recluster_due=due)
    assert update_fact(meta).startswith("1 since the fit (5 rows added in all); last: +5 / -2 rows by "
                                        "change-data-feed, 2.5 s, input version 5")
    meta.updates[0].in_driver = True
    assert "by change-data-feed in the driver, 2.5 s" in update_fact(meta)
    assert RunMetadata.from_json(meta.to_json(), "run.json").updates[0].in_driver
    assert (update_note(meta) is not None and "re-cluster is due" in update_note(meta)) == due
    meta.pending_update = meta.updates[0]
    assert "interrupted while committing" in update_note(meta)
