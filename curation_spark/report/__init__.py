"""HTML report of a run folder: the figures that show whether a curation did its job.

Why: the numbers in ``run.json`` (objectives, Gini coefficients, size quantiles) are hard
to judge by eye, and the paper's argument is visual: plain k-means puts its centroids
where the data is dense, resampling spreads them over the support, and balanced sampling
flattens the cluster (and, as a check, the label) distribution. The report draws those
figures from a finished run (``run.json``, the level tables and a curated table) and
writes one self-contained ``report.html`` (figures embedded as base64 ``<img>``) with
the same figures saved next to it as PNG files.

Only small things reach the driver (:mod:`.points`): the ``size`` column of the centroid
tables (capped, sampled beyond the cap), group-by counts, and samples of at most ~50k
points for the 2-D scatter. Tables that are small as a whole (:data:`.run_data.SMALL_TABLE_ROWS`)
are collected once and shared by the sections. Every figure is optional: what cannot be
drawn (a level that is missing, no curated table, no input, no ``label`` column, more
than two dimensions) is skipped with a note in the HTML instead of failing the whole report.

Modules, one concern each (imports point down this list):

* :mod:`.write` -- :func:`write_report`, the entry point;
* :mod:`.sections` -- one builder per figure: its numbers, the figure, its caption;
* :mod:`.html` -- the page;
* :mod:`.points` -- the Spark sampling of the points the figures draw;
* :mod:`.run_data` -- what the run folder holds (run.json, level tables) as numbers;
* :mod:`.plots` -- the figures, numpy in and a matplotlib Figure out (no Spark);
* :mod:`.common` -- the label column, the seed.
"""
from curation_spark.report.plots import (
    plot_cluster_sizes,
    plot_curated_per_cluster,
    plot_labels,
    plot_objectives,
    plot_resampling,
    plot_scatter_2d,
)
from curation_spark.report.run_data import entropy_from_counts
from curation_spark.report.sections import (
    FIG_DEDUP,
    FIG_LABELS,
    FIG_OBJECTIVE,
    FIG_PER_CLUSTER,
    FIG_RESAMPLING,
    FIG_SCATTER,
    FIG_SIZES,
    FIGURES,
)
from curation_spark.report.write import REPORT_HTML, write_report

__all__ = [
    "write_report", "REPORT_HTML", "FIGURES", "FIG_SIZES", "FIG_OBJECTIVE", "FIG_RESAMPLING", "FIG_LABELS",
    "FIG_PER_CLUSTER", "FIG_SCATTER", "FIG_DEDUP", "plot_cluster_sizes", "plot_objectives", "plot_resampling",
    "plot_labels", "plot_curated_per_cluster", "plot_scatter_2d", "entropy_from_counts",
]
