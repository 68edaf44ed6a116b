"""The HTML report: a tiny real run of the toy rings, then write_report on it.

The run is built once per module with the real pipeline (2 levels, resampling at both),
so every figure has real data behind it. The PNGs are checked to be real pictures (not
blank canvases) and the HTML to be self-contained (figures embedded as base64).
"""
from __future__ import annotations

import base64
import os
import re

import numpy as np
import pytest

from curation_spark import pipeline, report, synth
from curation_spark.config import load_config
from curation_spark.io import paths
from curation_spark.method.balance import label_entropy
from curation_spark.errors import ConfigError
from curation_spark.report import html as report_html
from curation_spark.report import plots, run_data

#: The figures of a run without a dedup step (the report's fixture run): all but the dedup one.
DRAWN = [name for name in report.FIGURES if name != report.FIG_DEDUP]

#: End-to-end Spark runs: outside the fast lane (`-m "not slow and not cluster"`), in CI.
pytestmark = pytest.mark.slow

RING_SIZES = (600, 60, 200, 100, 300)
IMG_RE = re.compile(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_real_png(path: str) -> None:
    """A figure with content: > 5 KB and its pixels are not one flat colour."""
    import matplotlib.image as mpimg

    assert os.path.isfile(path), f"missing figure {path}"
    assert os.path.getsize(path) > 5 * 1024, f"{path} is only {os.path.getsize(path)} bytes"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert float(pixels[..., :3].std()) > 0.05, f"{path} looks blank"


#: The end-to-end tests run the real pipeline first (tens of seconds on a local session).
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def report_run(spark, tmp_path_factory):
    """A finished 2-level run of the small rings with a curated table that keeps ``label``."""
    base = tmp_path_factory.mktemp("report_run")
    rings = synth.make_rings(seed=0, sizes=RING_SIZES)
    rings_path, run_path = str(base / "rings"), str(base / "run")
    pipeline.write_synthetic(spark, rings, rings_path, "delta")
    config = load_config([], [
        f"input.path={rings_path}", f"output.path={run_path}",
        "clustering.n_levels=2", "clustering.n_clusters=[40,8]", "clustering.n_iters=10",
        "clustering.n_resampling_steps=[2,1]", "clustering.sample_size=[5,2]",
        "sampling.target_size=200", "sampling.keep_columns=[label]",
    ])
    summary = pipeline.run(config, spark)
    return {"run": summary.run_path, "rings": rings_path, "base": base, "curated": summary.curated_path,
            "labels": rings.column("label").to_numpy()}


@pytest.fixture(scope="module")
def default_report(spark, report_run):
    path = report.write_report(report_run["run"], spark=spark)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    return path, text


@slow
def test_report_is_written_next_to_the_run_and_self_contained(report_run, default_report):
    path, text = default_report
    assert path == os.path.join(paths.display(report_run["run"]), "report", report.REPORT_HTML)
    images = IMG_RE.findall(text)
    assert len(images) == len(DRAWN)
    assert "This run has no near-duplicate removal" in text and "(no dedup)" in text
    for data in images:
        assert base64.b64decode(data)[:8] == PNG_MAGIC
    # per-level stats table and the config
    assert "<h2>Levels</h2>" in text and "Gini (final)" in text
    assert "n_resampling_steps" in text and report_run["rings"] in text


@slow
def test_config_is_a_collapsed_table_of_dotted_keys(report_run, default_report):
    text = default_report[1]
    details = re.findall(r"<details>(.*?)</details>", text, flags=re.S)
    assert len(details) == 1
    assert "<td class='l'>clustering.n_resampling_steps</td><td class='l'>[2, 1]</td>" in details[0]
    # (run.json records the path qualified, as every layer saw it)
    assert f"<td class='l'>input.path</td><td class='l'>file:{report_run['rings']}</td>" in details[0]
    assert "<pre>" not in text  # no vertical JSON any more


@slow
def test_every_figure_is_a_real_picture(default_report):
    out_dir = os.path.dirname(default_report[0])
    for name in DRAWN:
        _assert_real_png(os.path.join(out_dir, name))
    # the paper's toy view exists for the 2-D rings
    assert os.path.isfile(os.path.join(out_dir, report.FIG_SCATTER))
    with open(os.path.join(out_dir, report.FIG_SCATTER), "rb") as fh:
        assert base64.b64encode(fh.read()).decode() in default_report[1]


@slow
def test_label_entropy_matches_the_tables(spark, report_run, default_report):
    """The entropies in the report are synth.label_entropy of the input and curated labels."""
    curated = spark.read.format("delta").load(report_run["curated"]).select("label").toPandas()["label"].to_numpy()
    n = len(RING_SIZES)
    e_in = label_entropy(report_run["labels"], n_labels=n)
    e_cur = label_entropy(curated, n_labels=n)
    text = default_report[1]
    assert f"Input {e_in:.3f}, curated {e_cur:.3f}" in text
    assert e_cur > e_in  # balanced sampling flattens the rings


@slow
def test_options_out_table_and_input_without_labels(spark, report_run):
    """An explicit table and out dir; an input without ``label`` skips the label figure with a note."""
    from pyspark.sql import functions as F

    no_label = str(report_run["base"] / "rings_no_label")
    (spark.read.format("delta").load(report_run["rings"]).select("id", F.col("embedding"))
     .write.format("parquet").save(no_label))
    out = str(report_run["base"] / "other_report")
    path = report.write_report(report_run["run"], out_dir=out, table="curated", input_path=no_label, spark=spark)
    assert path == os.path.join(out, report.REPORT_HTML)
    text = open(path, encoding="utf-8").read()
    assert not os.path.exists(os.path.join(out, report.FIG_LABELS))
    assert "has no &#x27;label&#x27; column" in text
    for name in (report.FIG_SIZES, report.FIG_PER_CLUSTER, report.FIG_SCATTER):
        _assert_real_png(os.path.join(out, name))


@slow
def test_shared_small_tables_draw_the_same_report_as_per_section_queries(spark, report_run, monkeypatch):
    """Small tables are collected once and shared by the sections; the report is the one the
    per-section Spark queries draw (the scatter's curated markers may be drawn in another order)."""
    import matplotlib.image as mpimg

    def strip(text):
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "IMG", text)
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "TS", text)

    shared = str(report_run["base"] / "report_shared")
    path_shared = report.write_report(report_run["run"], out_dir=shared, spark=spark)
    monkeypatch.setattr(run_data, "SMALL_TABLE_ROWS", 0)  # the module that reads it
    queried = str(report_run["base"] / "report_queried")
    path_queried = report.write_report(report_run["run"], out_dir=queried, spark=spark)
    assert strip(open(path_shared, encoding="utf-8").read()) == strip(open(path_queried, encoding="utf-8").read())
    for name in DRAWN:
        a, b = mpimg.imread(os.path.join(shared, name)), mpimg.imread(os.path.join(queried, name))
        assert a.shape == b.shape, name
        if name != report.FIG_SCATTER:
            np.testing.assert_array_equal(a, b, err_msg=name)


@slow
def test_unknown_table_is_an_error_naming_it(spark, report_run):
    with pytest.raises(ConfigError, match="no_such_table"):
        report.write_report(report_run["run"], out_dir=str(report_run["base"] / "x"), table="no_such_table", spark=spark)


def test_missing_run_folder_is_a_config_error_naming_the_path(spark, tmp_path):
    missing = str(tmp_path / "not_a_run")
    with pytest.raises(ConfigError, match=re.escape(missing)):
        report.write_report(missing, spark=spark)
    os.makedirs(missing)
    with pytest.raises(ConfigError, match=re.escape(missing)):
        report.write_report(missing, spark=spark)


# --------------------------------------------------------------------------- plotting, no Spark


def _save(fig, tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    plots.save_figure(fig, str(tmp_path), name)
    return path


def test_entropy_from_counts_is_synth_label_entropy():
    counts = np.array([20000, 200, 1000, 500, 8000])
    labels = np.repeat(np.arange(5), counts)
    assert report.entropy_from_counts(counts, 5) == pytest.approx(label_entropy(labels, n_labels=5))
    # missing classes are penalised when n_labels says they exist
    assert report.entropy_from_counts([10, 10, 0], 3) == pytest.approx(label_entropy(np.repeat([0, 1], 10), 3))
    big = np.array([10_000_000, 3_000_000, 1])  # computed from the counts, not expanded
    p = big / big.sum()
    assert report.entropy_from_counts(big, 3) == pytest.approx(-(p * np.log(p)).sum() / np.log(3))


def test_plots_cover_wide_ranges_and_many_labels(tmp_path):
    rng = np.random.default_rng(0)
    sizes = {1: np.concatenate([rng.zipf(1.6, 5000), [0, 0]]), 2: rng.integers(1, 30, 300), 3: np.array([7, 9])}
    _assert_real_png(_save(report.plot_cluster_sizes(sizes), tmp_path, "sizes.png"))
    keys = list(range(300))
    a = rng.zipf(1.5, 300).astype(np.int64) * 10
    b = np.minimum(a, 25)
    b[:7] = 0
    fig = report.plot_labels(keys, a, b, report.entropy_from_counts(a, 300), report.entropy_from_counts(b, 300))
    _assert_real_png(_save(fig, tmp_path, "labels.png"))
    s = rng.zipf(1.4, 3000).astype(np.int64)
    c = np.minimum(s, 100)
    c[::5] = 0
    _assert_real_png(_save(report.plot_curated_per_cluster(s, c, 1), tmp_path, "per_cluster.png"))


def test_resampling_plot_aligns_histograms_of_different_lengths(tmp_path):
    info = {
        "sizes_kmeans": {"min": 1, "median": 30, "max": 60, "gini": 0.2},
        "sizes": {"min": 1, "median": 28, "max": 250, "gini": 0.4},
        "sizes_kmeans_histogram": {"edges": [0, 1, 2, 4, 8, 16, 32, 64, 128], "counts": [0, 3, 4, 9, 20, 40, 24, 0]},
        "sizes_histogram": {"edges": [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                            "counts": [2, 10, 8, 9, 15, 30, 20, 4, 2, 0]},
        "resampling": [{"step": i, "objective": 10.0 + i, "sizes": {"min": 1, "median": 29, "max": 100 + 30 * i,
                                                                     "gini": 0.2 + 0.04 * i}} for i in (1, 2, 3, 4, 5)],
    }
    old = {k: v for k, v in info.items() if k != "sizes_kmeans_histogram"}  # an older run.json
    _assert_real_png(_save(report.plot_resampling({1: info, 2: old}), tmp_path, "resampling.png"))
    assert plots._pow2_labels([0, 1, 2, 4, 8]) == ["0", "1", "2-3", "4-7"]


def test_config_table_flattens_to_dotted_keys():
    config = {"clustering": {"n_levels": 2, "n_clusters": [40, 8], "tol": None}, "input": {"path": "/data/a<b"},
              "sampling": {"keep_columns": [], "extra": {}}}
    assert report_html.flatten_config(config) == [
        ("clustering.n_levels", 2), ("clustering.n_clusters", [40, 8]), ("clustering.tol", None),
        ("input.path", "/data/a<b"), ("sampling.keep_columns", []), ("sampling.extra", {})]
    text = report_html.config_html(config)
    assert text.startswith("<details>") and text.endswith("</details>") and "<summary>6 settings" in text
    assert "<td class='l'>clustering.n_clusters</td><td class='l'>[40, 8]</td>" in text
    assert "<td class='l'>clustering.tol</td><td class='l'>null</td>" in text
    assert "<td class='l'>input.path</td><td class='l'>/data/a&lt;b</td>" in text  # escaped


def test_per_cluster_scatter_is_jittered_and_its_bins_hold_whole_numbers():
    s = np.array([1, 1, 1, 2, 2, 5, 5, 5, 300, 300])
    c = np.array([1, 1, 1, 2, 2, 3, 3, 0, 3, 3])
    order = np.lexsort((c, s))
    x, y = plots.jittered_points(s, c)
    # equal points are pulled apart, by a few per cent (small counts stay nearest their integer),
    # along the diagonal: rows / size is exact, so no point crosses the rows = multiplier x size line
    assert len(np.unique(x)) == len(np.unique(y)) == len(s)
    pos = c[order] > 0
    np.testing.assert_allclose((y / x)[pos], (c[order] / s[order])[pos])
    for jittered, exact in ((x, s[order]), (y, c[order])):
        pos = exact > 0
        ratio = jittered[pos] / exact[pos]
        assert ratio.min() >= np.exp(-plots.JITTER_REL) and ratio.max() <= np.exp(plots.JITTER_REL)
        assert np.abs(jittered[~pos]).max(initial=0) <= plots.JITTER_ZERO
        np.testing.assert_array_equal(np.rint(jittered[exact <= 4]), exact[exact <= 4])
    # seeded, and the same whatever order the clusters come in
    perm = np.random.default_rng(1).permutation(len(s))
    x2, y2 = plots.jittered_points(s[perm], c[perm])
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    fig = plots.plot_curated_per_cluster(s, c, 1)
    scatter_ax, hist_ax = fig.axes[:2]
    np.testing.assert_allclose(scatter_ax.collections[0].get_offsets(), np.c_[x, y])
    lefts = np.array([p.get_x() for p in hist_ax.patches])
    np.testing.assert_allclose(lefts, np.arange(0, 4) - 0.5)  # one bar per count 0..3, centred on it
    for counts in (c, np.random.default_rng(2).zipf(1.5, 500)):  # narrow and log-spaced bins
        edges, _ = plots.count_edges(counts)
        np.testing.assert_array_equal(edges + 0.5, np.rint(edges + 0.5))
        assert edges[0] == -0.5 and edges[-1] > counts.max()
        assert np.histogram(counts, edges)[0].sum() == len(counts)


def test_scatter_panels_have_axis_labels_and_the_legend_is_outside():
    import pandas as pd

    rng = np.random.default_rng(0)
    pts = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300), "label": rng.integers(0, 5, 300)})
    cur = pts.iloc[:40].assign(copies=1)
    fig = plots.plot_scatter_2d(pts, {1: rng.normal(size=(20, 2)), 2: rng.normal(size=(4, 2))}, cur)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)
    assert all(ax.get_legend() is None for ax in panels)  # no legend over the points
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 5
