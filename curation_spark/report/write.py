"""``write_report``: the report of a run folder, written as ``report.html`` and PNG files.

Opens the run (:mod:`.run_data`), builds every figure section (:mod:`.sections`; a section
that fails becomes a note, never a failed report), saves the figures (:mod:`.plots`) and
writes the page (:mod:`.html`) atomically.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from curation_spark.errors import ConfigError
from curation_spark.io import paths
from curation_spark.io.runfolder import open_existing
from curation_spark.io.spark_api import describe_work
from curation_spark.report.html import Section, render_html
from curation_spark.report.plots import save_figure
from curation_spark.report.run_data import RunData, open_run_data
from curation_spark.report.sections import SECTIONS, Drawn

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: The report's logger keeps the name it had as one module.
log = logging.getLogger("curation_spark.report")

REPORT_HTML = "report.html"


def write_report(run_path: str, out_dir: str | None = None, table: str | None = None,
                 input_path: str | None = None, spark: SparkSession | None = None) -> str:
    """Write ``report.html`` (and its PNG figures) for the run folder ``run_path``.

    Parameters
    ----------
    run_path
        A run folder (holds ``run.json``); :class:`ConfigError` naming it otherwise.
    out_dir
        Local folder for ``report.html`` and the PNGs; default ``<run>/report`` (or, for a
        run folder on a remote file system, ``./report_<run name>``).
    table
        Curated table to describe (a name in ``run.json`` "samples", a table folder inside
        the run, or a path); default the most recently written curated table.
    input_path
        Input table to compare against (Parquet/Delta folder); default the run's input
        (``input.path`` / ``input.table`` of its config).
    spark
        Session to use; default the active one (:func:`curation_spark.io.session.get_spark`).

    Returns
    -------
    str
        Path of the written ``report.html``.
    """
    started = time.perf_counter()
    if spark is None:
        from curation_spark.io.session import get_spark

        spark = get_spark()
    run = open_existing(spark, run_path)
    if input_path:
        input_path = paths.qualify(spark, input_path, "--input")
    target = _report_dir(run.path, out_dir)
    ctx = open_run_data(spark, run, table, input_path, target)  # a bad --table fails before anything is written
    os.makedirs(target, exist_ok=True)
    log.info("report: run %s, %d level(s), curated table %s, input %s -> %s", run.path, len(ctx.levels),
             ctx.curated_name or "(none)", ctx.input_desc or "(none)", target)
    sections = [_build(ctx, name, title, builder) for name, title, builder in SECTIONS]
    describe_work(spark, None)
    text = render_html(ctx, sections)
    out = os.path.join(target, REPORT_HTML)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, out)
    drawn = sum(1 for s in sections if s.figure)
    log.info("report: wrote %s (%d figure(s), %.1f s)", out, drawn, time.perf_counter() - started)
    return out


def _report_dir(run_path: str, out_dir: str | None) -> str:
    """The local folder the report goes to (matplotlib and ``open`` need a local path)."""
    if out_dir:
        local = paths.local_path(out_dir)
        if local is None:
            raise ConfigError(f"--out: {out_dir} is not a local folder; the report is written with local file I/O")
        return os.path.abspath(local)
    local = paths.local_path(run_path)
    if local is not None:
        return os.path.abspath(os.path.join(local, "report"))
    name = run_path.rstrip("/").rsplit("/", 1)[-1] or "run"
    fallback = os.path.abspath(f"report_{name}")
    log.warning("run folder %s is not on the local file system; writing the report to %s (use --out to choose)",
                run_path, fallback)
    return fallback


def _build(ctx: RunData, name: str, title: str, builder: Callable[[RunData], Drawn]) -> Section:
    """Run one section builder; a failure becomes a note, never a failed report."""
    section = Section(title=title, name=name)
    describe_work(ctx.spark, f"report · {title}")
    t0 = time.perf_counter()
    try:
        drawn = builder(ctx)
    except Exception as exc:
        log.warning("report: could not draw %s: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        section.notes.append(f"This figure could not be drawn: {type(exc).__name__}: {first}")
        return section
    section.caption, section.notes, section.extra_html = drawn.caption, list(drawn.notes), drawn.extra_html
    if drawn.fig is not None:
        section.figure, section.image_b64 = name, save_figure(drawn.fig, ctx.out_dir, name)
        log.info("report: %s (%.1f s)", name, time.perf_counter() - t0)
    else:
        stale = os.path.join(ctx.out_dir, name)
        if os.path.exists(stale):  # an earlier report's figure must not pass for this one's
            os.remove(stale)
        log.info("report: %s skipped: %s", name, "; ".join(section.notes) or "nothing to draw")
    return section
