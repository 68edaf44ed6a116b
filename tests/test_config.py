"""Config loading, --set overrides, validation errors (one line naming the key), reference files."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from curation_spark.config import load_config, parse_override
from curation_spark.errors import ConfigError

CONF = Path(__file__).resolve().parent.parent / "conf"


def test_toy_config_loads_with_overrides():
    cfg = load_config([CONF / "toy.yaml"], ["clustering.n_clusters=[100,20]", "clustering.n_iters=7",
                                            "output.format=parquet", "spark.conf.spark.sql.shuffle.partitions=3"])
    assert cfg.clustering.n_clusters == (100, 20)
    assert cfg.clustering.n_iters == (7, 7)
    assert cfg.clustering.sample_size == (15, 2)
    assert cfg.output.format == "parquet"
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "3"
    assert cfg.sampling.keep_columns == ()  # a recipe carries nothing specific to one table
    assert cfg.input.path is None and cfg.output.path is None


def test_override_values_are_yaml():
    assert parse_override("clustering.n_clusters=[100, 20]") == (["clustering", "n_clusters"], [100, 20])
    assert parse_override("input.path=s3://b/x=1") == (["input", "path"], "s3://b/x=1")
    assert load_config([], ["clustering.tol=1e-3"]).clustering.tol == pytest.approx(1e-3)


def test_later_files_and_overrides_win(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("clustering:\n  n_levels: 1\n  n_clusters: [10]\nsampling:\n  target_size: 5\n")
    b = tmp_path / "b.yaml"
    b.write_text("sampling:\n  target_size: 9\n")
    cfg = load_config([a, b], ["sampling.multiplier=3"])
    assert cfg.sampling.target_size == 9 and cfg.sampling.multiplier == 3 and cfg.clustering.n_clusters == (10,)


@pytest.mark.parametrize("overrides, key", [
    (["clustering.n_levels=2", "clustering.n_clusters=[10]"], "clustering.n_clusters"),
    (["clustering.n_levels=2", "clustering.n_clusters=[10,2]", "clustering.sample_size=[1,2,3]"], "clustering.sample_size"),
    (["clustering.n_clusters=[0]"], "clustering.n_clusters[0]"),
    (["clustering.n_clusters=[-5]"], "clustering.n_clusters[0]"),
    (["clustering.n_iters=0"], "clustering.n_iters"),
    (["clustering.n_iters=abc"], "clustering.n_iters"),
    (["clustering.n_resampling_steps=-1"], "clustering.n_resampling_steps"),
    (["clustering.sampling_strategy=x"], "clustering.sampling_strategy"),
    (["clustering.distance=manhattan"], "clustering.distance"),
    (["clustering.init=best"], "clustering.init"),
    (["clustering.engine=gpu"], "clustering.engine"),
    (["sampling.strategy=z"], "sampling.strategy"),
    (["sampling.multiplier=0"], "sampling.multiplier"),
    (["sampling.target_size=-3"], "sampling.target_size"),
    (["output.format=csv"], "output.format"),
    (["input.format=orc"], "input.format"),
    (["clustering.n_clusterz=[3]"], "clustering.n_clusterz"),
    (["clusterin.n_clusters=[3]"], "clusterin"),
    (["input.path=a", "input.table=b"], "input.path"),
    (["sampling.keep_columns=[copy]"], "sampling.keep_columns"),
    (["clustering.tol=-1"], "clustering.tol"),
])
def test_invalid_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config([], overrides)
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config([], ["clustering.n_iters"])
    with pytest.raises(ConfigError, match="file not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("clustering: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])


@pytest.mark.parametrize("name, levels, clusters, splits, sample", [
    ("reference_2levels.yaml", 2, (5000, 1000), (1, 1), (10, 3)),
    ("reference_4levels.yaml", 4, (100_000, 500_000, 50_000, 10_000), (100, 1, 1, 1), (1, 10, 5, 3)),
])
def test_reference_files_load_as_clustering_section(caplog, name, levels, clusters, splits, sample):
    with caplog.at_level(logging.WARNING):
        cfg = load_config([CONF / name])
    c = cfg.clustering
    assert (c.n_levels, c.n_clusters, c.n_splits, c.sample_size) == (levels, clusters, splits, sample)
    assert c.n_iters == (50,) * levels and c.sampling_strategy == ("c",) * levels
    warning = " ".join(r.getMessage() for r in caplog.records)
    for key in ("ngpus_per_node", "nnodes", "ncpus_per_gpu", "slurm_partition", "checkpoint_period"):
        assert key in warning


def test_reference_file_plus_run_sections(tmp_path):
    extra = tmp_path / "io.yaml"
    extra.write_text("input:\n  path: /data/emb\noutput:\n  path: /runs/x\nsampling:\n  target_size: 10\n")
    cfg = load_config([CONF / "reference_2levels.yaml", extra], ["clustering.n_clusters=[50,10]"])
    assert cfg.input.path == "/data/emb" and cfg.clustering.n_clusters == (50, 10)


def test_fingerprint_tracks_clustering_not_sampling():
    a = load_config([], ["clustering.n_clusters=[10]", "sampling.target_size=5"])
    b = load_config([], ["clustering.n_clusters=[10]", "sampling.target_size=50"])
    c = load_config([], ["clustering.n_clusters=[11]", "sampling.target_size=5"])
    assert a.clustering_fingerprint() == b.clustering_fingerprint() != c.clustering_fingerprint()


def test_sampling_only_config_equals_the_overrides_path():
    from curation_spark.config import sampling_only_config

    typed = sampling_only_config(250, 2, "c", 7, ["label", "url"])
    strings = load_config([], ["sampling.target_size=250", "sampling.multiplier=2", "sampling.strategy=c",
                               "sampling.seed=7", "sampling.keep_columns=[label,url]"])
    assert typed == strings
    with pytest.raises(ConfigError, match="sampling.multiplier"):
        sampling_only_config(10, multiplier=0)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "yes"])
def test_degenerate_share_must_be_a_share(value):
    with pytest.raises(ConfigError, match="clustering.degenerate_share"):
        load_config([], [f"clustering.degenerate_share={value}"])


def test_degenerate_share_does_not_tie_the_run_folder():
    """A reporting threshold: changing it must not refuse resuming the run."""
    a = load_config([], ["input.path=/in", "clustering.degenerate_share=0.5"])
    b = load_config([], ["input.path=/in", "clustering.degenerate_share=0.9"])
    c = load_config([], ["input.path=/in", "clustering.seed=3"])
    assert a.clustering_fingerprint() == b.clustering_fingerprint() != c.clustering_fingerprint()


@pytest.mark.parametrize("override, message", [
    ("dedup.threshold=0", r"dedup.threshold: expected a share in \(0, 1\], got 0"),
    ("dedup.threshold=1.01", r"dedup.threshold: expected a share in \(0, 1\]"),
    ("dedup.keep=last", r"dedup.keep: .*'last'"),
    ("dedup.probes=0", r"dedup.probes"),
    ("dedup.probes=9", r"dedup.probes: at most 8"),
    ("dedup.n_clusters=0", r"dedup.n_clusters"),
    ("dedup.block_rows=4", r"dedup.block_rows"),
    ("dedup.enabled=maybe", r"dedup.enabled: expected true or false"),
    ("dedup.tolerance=1", r"dedup.tolerance: unknown key"),
])
def test_dedup_values_are_checked_before_spark(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([], [override])


def test_a_dedup_section_switches_dedup_on_and_ties_the_fingerprint():
    plain = load_config([], ["input.path=/in"])
    with_dedup = load_config([], ["input.path=/in", "dedup.threshold=0.97"])
    assert not plain.dedup.enabled and with_dedup.dedup.enabled and with_dedup.dedup.threshold == 0.97
    assert load_config([], ["input.path=/in", "dedup.enabled=false", "dedup.threshold=0.97"]).dedup.enabled is False
    # the hierarchy of a deduplicated run is another hierarchy; a plain run keeps its old fingerprint
    assert plain.clustering_fingerprint() != with_dedup.clustering_fingerprint()
    assert plain.clustering_fingerprint() == load_config([], ["input.path=/in", "dedup.enabled=false",
                                                              "dedup.threshold=0.97"]).clustering_fingerprint()


def test_defaults_give_the_method_resampling_and_distance_auto():
    """With no clustering keys, every level resamples (10 steps, sample_size derived from
    its mean cluster size) and the distance follows the data."""
    from curation_spark.config import Config, build_config

    for cfg in (Config(), build_config({}), load_config([], ["input.path=/in"])):
        assert cfg.clustering.n_resampling_steps == (10,) and cfg.clustering.sample_size == (None,)
        assert cfg.clustering.distance == "auto"
    two = build_config({"clustering": {"n_levels": 2, "n_clusters": [100, 10]}})
    assert two.clustering.n_resampling_steps == (10, 10) and two.clustering.sample_size == (None, None)
    assert build_config({"clustering": {"sample_size": "auto"}}).clustering.sample_size == (None,)


@pytest.mark.parametrize("requested, n_points, k, expected", [
    (None, 29_700, 1000, 15), (None, 1000, 300, 2), (None, 500, 400, 1), (None, 10, 10, 1), (7, 10, 10, 7),
])
def test_sample_size_default_is_half_the_mean_cluster_size(requested, n_points, k, expected):
    from curation_spark.config import resolve_sample_size

    assert resolve_sample_size(requested, n_points, k) == expected


def test_one_source_of_defaults_round_trips():
    from dataclasses import fields

    from curation_spark.config import DEFAULTS, SECTIONS, Config

    for name, cls in SECTIONS.items():  # every dataclass field is a known key, and nothing else
        assert set(DEFAULTS[name]) == {f.name for f in fields(cls)}
    cfg = load_config([CONF / "toy.yaml"], ["input.path=/in", "output.path=/out"])
    assert Config.from_dict(cfg.to_dict()) == cfg
    changed = cfg.replace(**{"clustering.n_iters": 7, "sampling.target_size": 20})
    assert changed.clustering.n_iters == (7, 7) and changed.sampling.target_size == 20
    with pytest.raises(ConfigError, match=r"^clustering.n_iters: must be >= 1"):
        cfg.replace(**{"clustering.n_iters": 0})
    with pytest.raises(ConfigError, match=r"^clustering.bogus: unknown key"):
        Config.from_dict({"clustering": {"bogus": 1}})


def test_a_config_error_names_its_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("clustering:\n  n_clusterz: 5\n")
    with pytest.raises(ConfigError, match=r"^clustering.n_clusterz: unknown key .* \(in .*mine.yaml\)$"):
        load_config([CONF / "toy.yaml", bad])
    bad.write_text("clustering:\n  n_iters: [1, 2, 3]\n")
    with pytest.raises(ConfigError, match=r"^clustering.n_iters: has 3 values .* \(in .*mine.yaml\)$"):
        load_config([CONF / "toy.yaml", bad])
    with pytest.raises(ConfigError) as info:  # an override names itself already
        load_config([CONF / "toy.yaml"], ["clustering.n_iters=0"])
    assert "(in " not in str(info.value)


def test_more_clusters_than_the_level_below_makes_is_refused_unless_clamped():
    with pytest.raises(ConfigError, match=r"^clustering.n_clusters\[1\]: level 2 asks for 300 clusters but level 1 "
                                          r"makes at most 200.*clamp_n_clusters"):
        load_config([], ["clustering.n_levels=2", "clustering.n_clusters=[200,300]"])
    assert load_config([], ["clustering.n_levels=2", "clustering.n_clusters=[200,300]", "clustering.n_splits=[2,1]"])
    clamped = load_config([], ["clustering.n_levels=2", "clustering.n_clusters=[200,300]",
                               "clustering.clamp_n_clusters=true"])
    assert clamped.clustering.clamp_n_clusters is True
    with pytest.raises(ConfigError, match=r"^clustering.clamp_n_clusters: expected true or false"):
        load_config([], ["clustering.clamp_n_clusters=maybe"])


def test_a_packaged_recipe_is_found_by_name(tmp_path, monkeypatch, capsys):
    from curation_spark import recipes
    from curation_spark.cli import main

    monkeypatch.chdir(tmp_path)  # no conf/ here: the names resolve to the package's recipes
    assert sorted(recipes.available()) == sorted(p.stem for p in CONF.glob("*.yaml"))
    assert load_config(["toy"]) == load_config([CONF / "toy.yaml"]) == load_config(["toy.yaml"])
    assert load_config(["reference_2levels"]).clustering.n_levels == 2
    with pytest.raises(ConfigError, match=r"^config: toys is neither a file nor a packaged recipe \(kmeans, "):
        load_config(["toys"])
    with pytest.raises(ConfigError, match=r"^config: file not found: conf/toy.yaml$"):
        load_config(["conf/toy.yaml"])  # a path stays a path
    (tmp_path / "toy").write_text("sampling:\n  target_size: 7\n")
    assert load_config(["toy"]).sampling.target_size == 7  # a file of that name wins
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == sorted(recipes.available())
    assert any(line.startswith("toy ") and "toy setting" in line for line in listed)
