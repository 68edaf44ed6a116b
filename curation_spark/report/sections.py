"""The report's figure sections: for each figure, what it needs, the figure and its caption.

A section builder takes the opened run (:class:`.run_data.RunData`), gets its numbers from
:mod:`.run_data` and its points from :mod:`.points`, draws with :mod:`.plots` and returns
a :class:`Drawn` (or a note saying why there is nothing to draw). :data:`SECTIONS` lists
them in the order the report shows them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from curation_spark.report import points, run_data
from curation_spark.report.common import LABEL_COL
from curation_spark.report.html import label_table_html
from curation_spark.report.plots import (
    MAX_BAR_LABELS,
    plot_cluster_sizes,
    plot_curated_per_cluster,
    plot_dedup,
    plot_labels,
    plot_objectives,
    plot_resampling,
    plot_scatter_2d,
)
from curation_spark.report.run_data import RunData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_SIZES = "cluster_sizes.png"
FIG_OBJECTIVE = "objective.png"
FIG_RESAMPLING = "resampling_effect.png"
FIG_LABELS = "labels.png"
FIG_PER_CLUSTER = "curated_per_cluster.png"
FIG_SCATTER = "scatter_2d.png"
FIG_DEDUP = "dedup_similarity.png"


@dataclass
class Drawn:
    """What a section builder returns."""

    fig: Figure | None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    extra_html: str = ""


def _section_sizes(ctx: RunData) -> Drawn:
    if not ctx.levels:
        return Drawn(None, notes=["No complete level in run.json."])
    sizes, totals, notes = points.level_sizes(ctx)
    if not sizes:
        return Drawn(None, notes=notes or ["No centroids table could be read."])
    fig = plot_cluster_sizes(sizes, totals)
    caption = ("Left panels: histogram of cluster sizes per level (log-spaced bins and log axes where the sizes "
               "span a wide range). A level's cluster size is the number of its inputs: points for level 1, "
               "clusters of level l-1 for level l. "
               "Last panel: sizes sorted in decreasing order against their rank (log-log); a flat curve means "
               "balanced clusters.")
    return Drawn(fig, caption, notes)


def _section_objective(ctx: RunData) -> Drawn:
    infos = run_data.objective_infos(ctx)
    if not infos:
        return Drawn(None, notes=["run.json holds no k-means history for any level."])
    fig = plot_objectives(infos, run_data.distance(ctx))
    caption = ("Per level, left: the k-means objective at each iteration (computed against the centroids "
               "the iteration starts from). Right (levels with resampling): the objective of all of the level's "
               "points against the centroids after each resampling step; step 0 is plain k-means. Resampling "
               "trades a somewhat higher objective for centroids that cover sparse regions.")
    return Drawn(fig, caption)


def _section_resampling(ctx: RunData) -> Drawn:
    infos, notes = run_data.resampling_infos(ctx)
    if not infos:
        return Drawn(None, notes=["No level ran resampling steps (clustering.n_resampling_steps = 0 or "
                                  "sample_size = 1), so there is no before/after to show."])
    fig = plot_resampling(infos)
    caption = ("Left: number of clusters per power-of-two size bin after plain k-means (grey) and after the "
               "last resampling step (red). Right: min / median / max cluster size and the Gini coefficient "
               "(0 = all clusters equal) after each step; step 0 is plain k-means. Resampling moves centroids "
               "from dense regions towards sparse ones, so the clusters become more uneven in size (more small "
               "clusters in sparse regions, larger ones in dense regions): a rising Gini is the expected effect.")
    return Drawn(fig, caption, notes)


def _section_labels(ctx: RunData) -> Drawn:
    if ctx.curated is None:
        return Drawn(None, notes=[ctx.curated_note or "No curated table."])
    if ctx.input_df is None:
        return Drawn(None, notes=[ctx.input_note or "No input table."])
    if LABEL_COL not in ctx.input_df.columns:
        return Drawn(None, notes=[f"The input has no {LABEL_COL!r} column; see the per-cluster figure "
                                  "for the distribution of the curated set instead."])
    info = run_data.label_counts(ctx)
    if info is None or "skipped" in (info or {}):
        return Drawn(None, notes=[(info or {}).get("skipped", "Labels could not be counted.")])
    fig = plot_labels(info["keys"], info["input"], info["curated"], info["entropy_input"], info["entropy_curated"])
    notes = []
    if info["nulls_input"] or info["nulls_curated"]:
        notes.append(f"Rows with a null label are left out: {info['nulls_input']:,} in the input, "
                     f"{info['nulls_curated']:,} in the curated set.")
    caption = (f"Rows per label in the input and in the curated set (curated labels from {info['source']}; "
               "each copy of a point counts). Normalised label entropy H / log(n_labels): 1 = perfectly "
               f"balanced. Input {info['entropy_input']:.3f}, curated {info['entropy_curated']:.3f}.")
    extra = label_table_html(info) if len(info["keys"]) <= MAX_BAR_LABELS else ""
    return Drawn(fig, caption, notes, extra)


def _section_per_cluster(ctx: RunData) -> Drawn:
    if ctx.curated is None:
        return Drawn(None, notes=[ctx.curated_note or "No curated table."])
    if 1 not in ctx.levels:
        return Drawn(None, notes=["Level 1 is not complete."])
    size, curated, notes = points.per_cluster_counts(ctx)
    if len(size) == 0:
        return Drawn(None, notes=["The level-1 centroids table is empty."])
    fig = plot_curated_per_cluster(size, curated, run_data.multiplier(ctx))
    caption = ("Left: curated rows (copies included) drawn from each level-1 cluster against the cluster's "
               "size (log x; y linear near 0, log above; the points are jittered slightly so that clusters "
               "with the same numbers do not hide each other). Balanced sampling takes all of a small cluster "
               "(dashed line: rows = multiplier x size) and caps the large ones, so the points should lie on "
               "the line and then flatten. Right: how many clusters contribute 0, 1, 2, ... curated rows, with "
               "the Gini coefficient of the cluster sizes next to that of the curated rows per cluster "
               "(lower = more even).")
    return Drawn(fig, caption, notes)


def _section_scatter(ctx: RunData) -> Drawn:
    if ctx.dim is None:
        return Drawn(None, notes=["The embedding dimension is unknown (no input information in run.json)."])
    if ctx.dim != 2:
        return Drawn(None, notes=[f"The embeddings have dimension {ctx.dim}; the scatter is drawn for 2-D data only."])
    input_pts, centroids, curated_pts, notes = points.scatter_points(ctx)
    if input_pts is None and not centroids:
        return Drawn(None, notes=notes)
    fig = plot_scatter_2d(input_pts, centroids, curated_pts)
    caption = ("The paper's toy view. Input points (coloured by label where there is one), the level-1 "
               "centroids and the top-level centroids over the input (grey), and the curated set (distinct "
               "points; larger markers = more copies). Plain k-means puts most centroids where the points are "
               "dense; resampling and hierarchical balanced sampling should cover every group about equally.")
    return Drawn(fig, caption, notes)


def _section_dedup(ctx: RunData) -> Drawn:
    summary = ctx.meta.dedup
    if summary is None:
        return Drawn(None, notes=["This run has no near-duplicate removal (no dedup section in its config)."])
    edges, counts = points.dedup_similarities(ctx)
    fig = plot_dedup(edges, counts, summary.threshold, summary.removed, summary.points_in)
    caption = (f"Near-duplicates removed before clustering: {summary.removed:,} of {summary.points_in:,} points "
               f"in {summary.groups:,} groups (keep rule '{summary.keep}', {summary.n_clusters:,} coarse clusters, "
               f"{summary.probes} probed per point, {summary.pairs_compared:,} pairs compared). Each removed point "
               "is counted at its similarity to the kept point it duplicates; a mass at 1.0 means exact copies.")
    return Drawn(fig, caption)


#: The figure sections in the order the report shows them: (PNG name, title, builder).
SECTIONS: tuple[tuple[str, str, Callable[[RunData], Drawn]], ...] = (
    (FIG_DEDUP, "Near-duplicates removed", _section_dedup),
    (FIG_SIZES, "Cluster sizes per level", _section_sizes),
    (FIG_OBJECTIVE, "k-means objective", _section_objective),
    (FIG_RESAMPLING, "Effect of resampling on cluster sizes", _section_resampling),
    (FIG_LABELS, "Labels: input vs curated set", _section_labels),
    (FIG_PER_CLUSTER, "Curated rows per level-1 cluster", _section_per_cluster),
    (FIG_SCATTER, "2-D view: input, centroids, curated set", _section_scatter),
)
#: Every figure the report can draw, in the order it shows them.
FIGURES = tuple(name for name, _, _ in SECTIONS)
