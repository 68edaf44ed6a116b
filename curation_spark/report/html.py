"""The report's HTML: one self-contained page (figures embedded as base64 ``<img>``).

Formatting only: the numbers come from :mod:`.run_data` as plain values, the figures as
rendered PNGs in :class:`Section` records.
"""
from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from curation_spark.report.common import LABEL_COL
from curation_spark.report.run_data import level_rows, run_facts, sample_rows

if TYPE_CHECKING:
    from curation_spark.io.run_metadata import RunMetadata
    from curation_spark.report.run_data import RunData


@dataclass
class Section:
    """One figure of the report: the PNG (if drawn), its caption, notes and extra HTML."""

    title: str
    name: str
    figure: str | None = None
    image_b64: str | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    extra_html: str = ""


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.note { background: #fff7e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; margin: 0.5em 0; }
.caption { color: #444; font-size: 0.92em; max-width: 1000px; }
.meta { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
details summary { cursor: pointer; color: #333; }
table.config td { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.95em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if v != v:
        return "n/a"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[Any]], left: int = 0, css_class: str = "") -> str:
    """An HTML table; cells are already-escaped HTML, the first ``left`` columns left-aligned."""
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers or []))
    body = []
    for row in rows:
        cells = "".join(f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    cls = f" class='{css_class}'" if css_class else ""
    return f"<table{cls}>{thead}<tbody>{''.join(body)}</tbody></table>"



def levels_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-level statistics (rows of :func:`.run_data.level_rows`)."""
    if not rows:
        return "<p class='note'>No complete level.</p>"
    cells = [[
        _num(r["level"]), _num(r["n_clusters_requested"]), _num(r["n_clusters"]),
        _num(r["n_points"]), _num(r["size_min"]), _num(r["size_median"]), _num(r["size_max"]),
        _num(r["gini_kmeans"], 3), _num(r["gini"], 3),
        _num(r["objective_kmeans"]), _num(r["objective"]), _num(r["resampling_steps"]),
        _e(r["n_splits"]), _largest_share(r["largest_share"], r["degenerate"]), _num(r["seconds"], 3),
    ] for r in rows]
    return _table(["level", "K requested", "clusters", "points", "size min", "size median", "size max",
                   "Gini (k-means)", "Gini (final)", "objective (k-means)", "objective (final)", "resampling steps",
                   "splits", "largest cluster", "seconds"], cells)


def _largest_share(share: Any, degenerate: Any) -> str:
    """The largest cluster's share of the level's points, flagged when the run found the
    level degenerate (above ``clustering.degenerate_share``)."""
    if share is None:
        return ""
    text = f"{100 * float(share):.1f} %"
    return f"<b title='more than clustering.degenerate_share'>{text} (degenerate)</b>" if degenerate else text


def samples_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The curated tables of the run (rows of :func:`.run_data.sample_rows`)."""
    if not rows:
        return "<p>No curated table in run.json.</p>"
    cells = [[_e(r["name"]) + (" (this report)" if r["this_report"] else ""), _num(r["rows"]), _num(r["target_size"]),
              _num(r["expected_rows"]), _num(r["multiplier"]), _e(r["strategy"]), _num(r["seed"]), _e(r["path"])]
             for r in rows]
    return _table(["table", "rows", "target", "expected rows", "multiplier", "strategy", "seed", "path"], cells, left=1)


def label_table_html(info: Mapping[str, Any]) -> str:
    """Rows and shares per label of the input and the curated set, and both entropies."""
    a, b = info["input"], info["curated"]
    pa, pb = a / max(a.sum(), 1), b / max(b.sum(), 1)
    rows = [[_e(k), _num(int(x)), f"{100 * p:.2f}%", _num(int(y)), f"{100 * q:.2f}%"]
            for k, x, p, y, q in zip(info["keys"], a, pa, b, pb, strict=True)]
    rows.append(["<b>entropy</b>", "", f"{info['entropy_input']:.3f}", "", f"{info['entropy_curated']:.3f}"])
    return _table([LABEL_COL, "input rows", "input share", "curated rows", "curated share"], rows, left=1)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"clustering": {"n_levels": 2}}`` -> ``[("clustering.n_levels", 2)]`` (the dotted keys
    of ``--set key=value``); lists and empty sections stay one value."""
    items: list[tuple[str, Any]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items += flatten_config(value, name + ".")
        else:
            items.append((name, value))
    return items


def _config_value(value: Any) -> str:
    """A config value on one line: strings as they are, everything else as JSON."""
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, default=str)


def config_html(config: Mapping[str, Any]) -> str:
    """The run's config as a two-column table (dotted key, value) in a collapsed ``<details>``."""
    items = flatten_config(config)
    if not items:
        return "<p>run.json holds no config.</p>"
    rows = [[_e(key), _e(_config_value(value))] for key, value in items]
    return (f"<details><summary>{len(items)} settings (dotted keys, as for <code>--set key=value</code>)"
            f"</summary>{_table(['setting', 'value'], rows, left=2, css_class='config')}</details>")


def update_fact(meta: RunMetadata) -> str:
    """The run's ``update`` history in one line (the last update's rows and drift)."""
    if not meta.updates:
        return "(none since the fit)"
    last = meta.updates[-1]
    added = sum(u.rows_added for u in meta.updates)
    text = (f"{len(meta.updates)} since the fit ({added:,} rows added in all); last: +{last.rows_added:,} / "
            f"-{last.rows_deleted:,} rows by {last.method}"
            + (" in the driver" if last.in_driver else "") + f", {last.seconds:.1f} s")
    if last.to_version is not None:
        text += f", input version {last.to_version}"
    if last.drift is not None:
        text += (f"; drift: {100 * last.drift.share_beyond_p99:.2f} % of the new rows beyond the fit's 99th-percentile "
                 f"distance (threshold {100 * last.drift.threshold:.2f} %)")
    return text


def update_note(meta: RunMetadata) -> str | None:
    """A warning when the last update found drift above the threshold, or one is half-committed."""
    if meta.pending_update is not None:
        return ("An update was interrupted while committing its tables: some tables are newer than others until "
                "`curation-spark update` runs again.")
    last = meta.updates[-1] if meta.updates else None
    if last is not None and last.drift is not None and last.drift.recluster_due:
        return (f"Drift: {100 * last.drift.share_beyond_p99:.1f} % of the last update's new rows lie beyond the fit's "
                f"99th-percentile distance (update.drift_threshold {100 * last.drift.threshold:.1f} %): a full "
                "re-cluster is due (`curation-spark run --fresh`).")
    return None


def render_html(ctx: RunData, sections: Sequence[Section]) -> str:
    """The whole page: run facts, notes, the levels and curated tables, the figure sections
    and the configuration."""
    run = ctx.run
    facts_of_run = run_facts(ctx)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    facts = [
        ("run folder", _e(run.path)),
        ("format", _e(run.format)),
        ("run.json updated", _e(facts_of_run["updated"])),
        ("input", _e(ctx.input_desc or ctx.input_note or "(not available)")),
        ("input rows", _num(facts_of_run["input_rows"])),
        ("dimension", _num(ctx.dim)),
        ("distance", _e(facts_of_run["distance"] + (" (clustering.distance: auto)"
                                                     if facts_of_run["config"]["clustering"]["distance"] == "auto"
                                                     else ""))),
        ("curated table", _e(f"{ctx.curated_name} ({ctx.curated_path})" if ctx.curated_name else "(none)")),
        ("curated rows", _num(facts_of_run["curated_rows"])),
        ("near-duplicates removed", _e(f"{d.removed:,} of {d.points_in:,} ({d.groups:,} groups, cosine >= "
                                      f"{d.threshold:g})" if (d := ctx.meta.dedup) is not None else "(no dedup)")),
        ("updates", _e(update_fact(ctx.meta))),
        ("report generated", _e(generated)),
    ]
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>curation-spark report: {_e(run.path)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>curation-spark report</h1>",
        f"<p class='meta'>{_e(run.path)}</p>",
        _table(None, [[f"<b>{k}</b>", v] for k, v in facts], left=2),
    ]
    general = list(ctx.notes) + [n for n in (ctx.curated_note, ctx.input_note, update_note(ctx.meta)) if n]
    parts += [f"<p class='note'>{_e(n)}</p>" for n in general]
    parts += ["<h2>Levels</h2>", levels_table(level_rows(ctx)), "<h2>Curated tables</h2>",
              samples_table(sample_rows(ctx))]
    for sec in sections:
        parts.append(f"<h2 id='{_e(sec.name.rsplit('.', 1)[0])}'>{_e(sec.title)}</h2>")
        if sec.image_b64:
            parts.append(f"<a href='{_e(sec.figure)}'><img src='data:image/png;base64,{sec.image_b64}' "
                         f"alt='{_e(sec.title)}'></a>")
        if sec.caption:
            parts.append(f"<p class='caption'>{_e(sec.caption)}</p>")
        parts += [f"<p class='note'>{_e(n)}</p>" for n in sec.notes]
        if not sec.image_b64 and not sec.notes:
            parts.append("<p class='note'>Skipped: nothing to draw.</p>")
        parts.append(sec.extra_html)
    parts += ["<h2 id='configuration'>Configuration</h2>",
              f"<p class='meta'>clustering fingerprint {_e(facts_of_run['fingerprint'])}</p>",
              config_html(facts_of_run["config"]),
              "</body></html>"]
    return "\n".join(parts)
