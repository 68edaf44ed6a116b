"""The report's figures: numpy arrays and plain values in, a matplotlib Figure out.

No Spark and no run folder here: the sections (:mod:`.sections`) gather the numbers
(:mod:`.run_data`, :mod:`.points`) and pass them in, so every figure can be drawn, and
tested, from arrays. Figures are Agg-backed :class:`matplotlib.figure.Figure` objects (no
pyplot: no global state, no GUI backend in notebooks or on servers).
"""
from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from curation_spark.report.common import LABEL_COL, SEED, sorted_keys

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Up to this many labels are drawn as bars; more are drawn as sorted share curves.
MAX_BAR_LABELS = 40
DPI = 110

INPUT_COLOR = "#4c72b0"
CURATED_COLOR = "#dd8452"
BEFORE_COLOR = "#8c8c8c"
AFTER_COLOR = "#c44e52"


def _figure(n_rows: int, n_cols: int, panel_w: float, panel_h: float) -> tuple[Figure, list[list[Axes]]]:
    """An Agg-backed figure (no pyplot: no global state, no GUI backend in notebooks/servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_w * n_cols, panel_h * n_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, [list(row) for row in axes]


def save_figure(fig: Figure, out_dir: str, name: str) -> str:
    """Save as ``out_dir/name`` and return the PNG as base64 for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    data = buf.getvalue()
    with open(os.path.join(out_dir, name), "wb") as fh:
        fh.write(data)
    fig.clear()
    return base64.b64encode(data).decode("ascii")


def _fmt(v: float) -> str:
    """Compact number for titles and tick labels."""
    v = float(v)
    if v != v:
        return "n/a"
    if abs(v) >= 1e12:
        return f"{v:.2g}"
    if abs(v) >= 1e9:
        return f"{v / 1e9:.3g}G"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}" if v != int(v) else f"{int(v)}"


def _plain_log_ticks(ax: Axes, which: str = "x") -> None:
    """Log-axis ticks as plain numbers (10, 20, 50, 1k) instead of 2x10^1 mantissa labels,
    which overlap when an axis spans less than two decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    lo, hi = max(min(lo, hi), 1e-12), max(lo, hi, 1e-12)
    decades = math.log10(hi / lo) if hi > lo else 0.0
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,) if decades <= 7 else None
    axis.set_major_locator(LogLocator(base=10, subs=subs) if subs else LogLocator(base=10, numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    axis.set_minor_formatter(NullFormatter())


def _size_bins(pos: np.ndarray) -> tuple[np.ndarray, bool]:
    """Histogram edges for positive integer sizes: integer bins if the range is narrow, else log-spaced
    (about 2 sqrt(K) bins, 8 to 40, so a small level is not a comb of single clusters)."""
    lo, hi = int(pos.min()), int(pos.max())
    if hi - lo <= 40:
        return np.arange(lo, hi + 2) - 0.5, False
    n_bins = int(np.clip(2 * math.sqrt(pos.size), 8, 40))
    edges = np.unique(np.floor(np.geomspace(lo, hi + 1, n_bins + 1)))
    if edges[-1] <= hi:
        edges = np.append(edges, hi + 1)
    return edges, True


def plot_cluster_sizes(sizes: Mapping[int, np.ndarray], totals: Mapping[int, int] | None = None) -> Figure:
    """One histogram of cluster sizes per level, plus a rank-size panel of all levels."""
    levels = sorted(sizes)
    n_panels = len(levels) + 1
    n_cols = min(3, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = _figure(n_rows, n_cols, 4.4, 3.5)
    flat = [ax for row in axes for ax in row]
    cmap = _level_colors(len(levels))
    for i, level in enumerate(levels):
        ax = flat[i]
        s = np.asarray(sizes[level], dtype=np.int64)
        pos = s[s > 0]
        n_empty = int((s == 0).sum())
        total = (totals or {}).get(level, len(s))
        title = f"level {level}: {_fmt(total)} clusters"
        if n_empty:
            title += f" ({n_empty} empty)"
        if pos.size:  # the numbers in the title: a text box inside would cover the tallest bars
            title += f"\nmin {_fmt(pos.min())} · max {_fmt(pos.max())} · Gini {_gini(s):.2f}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("cluster size (points)" if level == 1 else f"cluster size (level-{level - 1} clusters)")
        ax.set_ylabel("number of clusters")
        if pos.size == 0:
            ax.text(0.5, 0.5, "all clusters empty", ha="center", va="center", transform=ax.transAxes)
            continue
        edges, logx = _size_bins(pos)
        counts, _, _ = ax.hist(pos, bins=edges, color=cmap[i], edgecolor="white", linewidth=0.4)  # type: ignore[arg-type]  # array bins
        med = float(np.median(pos))
        ax.axvline(med, color="black", lw=1, ls="--", label=f"median {_fmt(med)}")
        if logx:
            ax.set_xscale("log")
            _plain_log_ticks(ax, "x")
        nz = counts[counts > 0]  # type: ignore[operator]  # one data set: an array
        if nz.size and nz.max() / nz.min() > 20:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
            bottom, top = ax.get_ylim()
            ax.set_ylim(bottom, top * 3)  # room for the legend
        else:
            ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
            ax.set_ylim(top=ax.get_ylim()[1] * 1.15)  # room for the legend
        ax.legend(fontsize=8, loc="upper right")
    ax = flat[len(levels)]
    for i, level in enumerate(levels):
        s = np.sort(np.asarray(sizes[level], dtype=np.int64))[::-1]
        s = s[s > 0]
        if s.size:
            ax.plot(np.arange(1, s.size + 1), s, color=cmap[i], lw=1.5, label=f"level {level}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax, "x")
    _plain_log_ticks(ax, "y")
    ax.set_xlabel("rank (largest cluster first)")
    ax.set_ylabel("cluster size")
    ax.set_title("rank-size, all levels", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    fig.suptitle("Cluster size distributions", fontsize=12)
    return fig


def plot_objectives(infos: Mapping[int, Mapping[str, Any]], distance: str = "l2") -> Figure:
    """Per level: k-means objective per iteration, and objective per resampling step.

    ``infos`` maps a level to its numbers in the shape of a run.json "levels" entry (plain
    values; read: ``kmeans_history`` [{iteration, objective}], ``resampling`` [{step,
    objective}], ``objective_kmeans``, ``n_clusters_requested`` / ``n_clusters``, ``n_points``).
    """
    levels = sorted(infos)
    any_resampling = any(infos[lvl].get("resampling") for lvl in levels)
    n_cols = 2 if any_resampling else 1
    fig, axes = _figure(len(levels), n_cols, 4.8, 3.0)
    ylabel = "sum of squared distances" if distance == "l2" else "sum of (1 - cos)"
    for row, level in enumerate(levels):
        info = infos[level]
        ax = axes[row][0]
        hist = info.get("kmeans_history") or []
        k = info.get("n_clusters_requested", info.get("n_clusters", "?"))
        if hist:
            its = [h.get("iteration", i + 1) for i, h in enumerate(hist)]
            obj = [float(h.get("objective", float("nan"))) for h in hist]
            ax.plot(its, obj, marker="o", ms=3, color=INPUT_COLOR, label="k-means")
            _maybe_log_y(ax, obj)
            if len(its) <= 12:
                ax.set_xticks(its)
        else:
            ax.text(0.5, 0.5, "no k-means history in run.json", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.set_title(f"level {level}: k-means, K={k}, {_fmt(info.get('n_points', float('nan')))} points", fontsize=10)
        ax.grid(True, alpha=0.3)
        if n_cols == 2:
            ax = axes[row][1]
            steps = info.get("resampling") or []
            if steps:
                xs = [0] + [int(s.get("step", i + 1)) for i, s in enumerate(steps)]
                ys = [float(info.get("objective_kmeans", hist[-1]["objective"] if hist else float("nan")))]
                ys += [float(s.get("objective", float("nan"))) for s in steps]
                ax.plot(xs, ys, marker="s", ms=4, color=AFTER_COLOR)
                _maybe_log_y(ax, ys)
                ax.set_xticks(xs if len(xs) <= 12 else np.linspace(0, xs[-1], 6).astype(int))
                ax.set_xlabel("resampling step (0 = k-means)")
                ax.set_ylabel(ylabel)
                ax.grid(True, alpha=0.3)
                ax.set_title(f"level {level}: after each resampling step", fontsize=10)
            else:
                ax.text(0.5, 0.5, f"level {level}: no resampling", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
    fig.suptitle("k-means objective", fontsize=12)
    return fig


def _maybe_log_y(ax: Axes, values: Sequence[float]) -> None:
    v = np.asarray([x for x in values if x == x and x > 0])
    if v.size > 1 and v.max() / v.min() > 50:
        ax.set_yscale("log")
        _plain_log_ticks(ax, "y")


def _pow2_labels(edges: Sequence[int]) -> list[str]:
    """``[0,1,2,4,8,...]`` edges as bin labels: "0", "1", "2-3", "4-7", ..."""
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        hi = int(hi) - 1
        labels.append(_fmt(lo) if hi <= lo else f"{_fmt(lo)}-{_fmt(hi)}")
    return labels


def plot_resampling(infos: Mapping[int, Mapping[str, Any]]) -> Figure:
    """Per level with resampling: size histogram before vs after, and size stats per step.

    ``infos`` maps a level to its numbers in the shape of a run.json "levels" entry (plain
    values; read: ``sizes_kmeans_histogram`` / ``sizes_histogram`` {edges, counts},
    ``sizes_kmeans`` / ``sizes`` {min, median, max, gini}, ``resampling`` [{step, sizes}]).
    """
    levels = sorted(infos)
    fig, axes = _figure(len(levels), 2, 5.2, 3.3)
    for row, level in enumerate(levels):
        info = infos[level]
        empty = {"edges": [0, 1], "counts": [0]}
        before = info.get("sizes_kmeans_histogram") or empty
        after = info.get("sizes_histogram") or empty
        edges = before["edges"] if len(before["edges"]) >= len(after["edges"]) else after["edges"]
        n_bins = len(edges) - 1
        b = np.zeros(n_bins, dtype=np.int64)
        a = np.zeros(n_bins, dtype=np.int64)
        b[: len(before["counts"])] = before["counts"]
        a[: len(after["counts"])] = after["counts"]
        used = np.nonzero((a + b) > 0)[0]
        lo, hi = (int(used.min()), int(used.max()) + 1) if used.size else (0, n_bins)
        x = np.arange(hi - lo)
        labels = _pow2_labels(edges)[lo:hi]
        ax = axes[row][0]
        width = 0.4
        sb = info.get("sizes_kmeans") or {}
        sa = info.get("sizes") or {}
        both_hists = bool(info.get("sizes_kmeans_histogram")) and bool(info.get("sizes_histogram"))
        shift = width / 2 if both_hists else 0.0  # a lone histogram is centred on its ticks
        if info.get("sizes_kmeans_histogram"):
            ax.bar(x - shift, b[lo:hi], width, color=BEFORE_COLOR,
                   label=f"k-means (Gini {sb.get('gini', float('nan')):.2f})")
        if info.get("sizes_histogram"):
            ax.bar(x + shift, a[lo:hi], width, color=AFTER_COLOR,
                   label=f"after {len(info['resampling'])} resampling step(s) "
                         f"(Gini {sa.get('gini', float('nan')):.2f})")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45 if len(x) > 6 else 0, ha="right" if len(x) > 6 else "center",
                           fontsize=8)
        nz = np.concatenate([a[lo:hi], b[lo:hi]])
        nz = nz[nz > 0]
        if nz.size and nz.max() / nz.min() > 30:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
            ax.set_ylim(top=ax.get_ylim()[1] * 3)  # room for the legend
        else:
            ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
            ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
        ax.set_xlabel("cluster size (power-of-two bins)")
        ax.set_ylabel("number of clusters")
        ax.set_title(f"level {level}: sizes before vs after resampling", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax = axes[row][1]
        stats = [sb] + [s.get("sizes") or {} for s in info["resampling"]]
        xs = np.arange(len(stats))
        for key, style in (("max", "-^"), ("median", "-o"), ("min", "-v")):
            ys = [float(s.get(key, float("nan"))) for s in stats]
            ax.plot(xs, ys, style, ms=4, label=key)
        ys_all = [float(s.get(k, 0)) for s in stats for k in ("min", "max")]
        if min(ys_all) > 0 and max(ys_all) / min(ys_all) > 20:
            ax.set_yscale("log")
            _plain_log_ticks(ax, "y")
        ax.set_xlabel("resampling step (0 = k-means)")
        ax.set_ylabel("cluster size")
        ax.set_xticks(xs if len(xs) <= 12 else np.linspace(0, xs[-1], 6).astype(int))
        ax.grid(True, alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(xs, [float(s.get("gini", float("nan"))) for s in stats], "--", color="black", lw=1, label="Gini")
        ax2.set_ylabel("Gini")
        ax2.set_ylim(0, 1)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4,
                  frameon=False)
        ax.set_title(f"level {level}: size statistics per step", fontsize=10)
    fig.suptitle("Effect of resampling", fontsize=12)
    return fig


def plot_labels(keys: Sequence[Any], input_counts: np.ndarray, curated_counts: np.ndarray,
                entropy_input: float, entropy_curated: float) -> Figure:
    """Label counts and shares of the input vs the curated set (bars, or share curves for many labels)."""
    a = np.asarray(input_counts, dtype=np.int64)
    b = np.asarray(curated_counts, dtype=np.int64)
    pa = a / max(a.sum(), 1)
    pb = b / max(b.sum(), 1)
    n = len(keys)
    fig, axes = _figure(1, 2, 5.4 if n <= 12 else 7.0, 3.8)
    ax1, ax2 = axes[0]
    lab_in = f"input ({_fmt(a.sum())} rows, entropy {entropy_input:.3f})"
    lab_cur = f"curated ({_fmt(b.sum())} rows, entropy {entropy_curated:.3f})"
    if n <= MAX_BAR_LABELS:
        x = np.arange(n)
        w = 0.4
        names = [str(k) for k in keys]
        ax1.bar(x - w / 2, a, w, color=INPUT_COLOR, label=lab_in)
        ax1.bar(x + w / 2, b, w, color=CURATED_COLOR, label=lab_cur)
        nz = np.concatenate([a, b])
        nz = nz[nz > 0]
        if nz.size and nz.max() / nz.min() > 20:
            ax1.set_yscale("log")
            _plain_log_ticks(ax1, "y")
        ax1.set_ylabel("rows")
        ax1.set_title("rows per label", fontsize=10)
        ax2.bar(x - w / 2, 100 * pa, w, color=INPUT_COLOR, label="input")
        ax2.bar(x + w / 2, 100 * pb, w, color=CURATED_COLOR, label="curated")
        ax2.axhline(100 / max(n, 1), color="black", ls="--", lw=1, label="uniform")
        ax2.set_ylabel("share of the set (%)")
        ax2.set_title("share per label", fontsize=10)
        rot = 0 if n <= 12 else 60
        for ax in (ax1, ax2):
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=rot, ha="right" if rot else "center", fontsize=8 if n > 12 else 9)
            ax.set_xlabel(LABEL_COL)
            ax.grid(True, axis="y", alpha=0.3)
    else:
        order = np.argsort(-a, kind="stable")
        ranks = np.arange(1, n + 1)
        ax1.plot(ranks, np.where(pa[order] > 0, pa[order], np.nan), color=INPUT_COLOR, label=lab_in)
        ax1.plot(ranks, np.where(pb[order] > 0, pb[order], np.nan), color=CURATED_COLOR, label=lab_cur)
        ax1.axhline(1 / n, color="black", ls="--", lw=1, label="uniform")
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        _plain_log_ticks(ax1, "x")
        ax1.set_xlabel(f"{LABEL_COL} rank (by input count)")
        ax1.set_ylabel("share of the set")
        ax1.set_title(f"share per label, {n} labels", fontsize=10)
        ax1.grid(True, alpha=0.3)
        both = (pa > 0) & (pb > 0)
        ax2.scatter(pa[both], pb[both], s=6, alpha=0.5, color=CURATED_COLOR, label="labels in both sets")
        lim = [min(pa[both].min(), pb[both].min()) if both.any() else 1e-6, max(pa.max(), pb.max(), 1e-6)]
        ax2.plot(lim, lim, color="grey", lw=1, ls=":", label="same share")
        ax2.axhline(1 / n, color="black", ls="--", lw=1, label="uniform")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("share in the input")
        ax2.set_ylabel("share in the curated set")
        ax2.set_title(f"{int((b == 0).sum())} label(s) absent from the curated set", fontsize=10)
        ax2.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Labels: input vs curated (normalised entropy {entropy_input:.3f} -> {entropy_curated:.3f})",
                 fontsize=12)
    return fig


#: Jitter of the per-cluster scatter: a point moves by a factor of up to exp(+-JITTER_REL),
#: the same distance everywhere on a log axis (1 and 2 stay apart: 1.1 < 1.5 < 1.8) ...
JITTER_REL = 0.1
#: ... and a zero (on the linear part of the symlog y axis) by up to +-JITTER_ZERO.
JITTER_ZERO = 0.12


def jittered_points(sizes: np.ndarray, curated: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """The (size, curated rows) points of the per-cluster scatter, jittered with a seeded rng
    so that clusters with equal numbers do not hide each other.

    Both coordinates of a point move by the same factor (up to ``exp(+-JITTER_REL)``), so
    its ratio rows / size, its place relative to the line rows = multiplier x size, stays
    exact: equal points spread along that diagonal. Zero rows move by up to
    ``+-JITTER_ZERO``. The points are put in (size, rows) order first, so the picture
    depends only on the points, not on the order the rows came in (a Spark join and a
    driver-side join give the same figure). Returns x and y in that order.
    """
    s = np.asarray(sizes, dtype=np.int64)
    c = np.asarray(curated, dtype=np.int64)
    order = np.lexsort((c, s))
    s, c = s[order].astype(np.float64), c[order].astype(np.float64)
    rng = np.random.default_rng(seed)
    factor = np.exp(JITTER_REL * rng.uniform(-1.0, 1.0, size=s.shape))
    zero_shift = JITTER_ZERO * rng.uniform(-1.0, 1.0, size=s.shape)
    return s * factor, np.where(c > 0, c * factor, zero_shift)


def count_edges(counts: np.ndarray) -> tuple[np.ndarray, bool]:
    """Histogram edges for non-negative integer counts, every edge at ``k - 0.5`` so each bar
    holds whole numbers and is centred on them: one bar per integer up to 40, log-spaced bars
    above (the first one for 0 alone). The flag says the axis should be symlog."""
    c = np.asarray(counts, dtype=np.int64)
    top = max(int(c.max()) if c.size else 0, 1)
    if top <= 40:
        return np.arange(0, top + 2) - 0.5, False
    n_bins = int(np.clip(2 * math.sqrt(len(c)), 10, 50))
    log_edges = np.unique(np.floor(np.geomspace(1, top + 1, n_bins + 1)))
    if log_edges[-1] <= top:
        log_edges = np.append(log_edges, top + 1)
    return np.concatenate([[-0.5], log_edges - 0.5]), True  # first bin: clusters that give nothing


def plot_curated_per_cluster(sizes: np.ndarray, curated: np.ndarray, multiplier: int = 1) -> Figure:
    """Curated rows per level-1 cluster against the cluster size, and both distributions.

    ``sizes`` and ``curated`` are per-cluster integers (same order); the scatter is jittered
    (:func:`jittered_points`) so that clusters with equal numbers stay visible.
    """
    s = np.asarray(sizes, dtype=np.int64)
    c = np.asarray(curated, dtype=np.int64)
    fig, axes = _figure(1, 2, 5.0, 3.8)
    ax1, ax2 = axes[0]
    keep = s > 0
    x, y = jittered_points(s[keep], c[keep])
    n_keep = max(int(keep.sum()), 1)
    ax1.scatter(x, y, s=float(np.clip(4000.0 / n_keep, 4, 28)),
                alpha=float(np.clip(2000.0 / n_keep, 0.25, 0.8)), color=CURATED_COLOR, edgecolor="none",
                label=f"{int(keep.sum()):,} clusters")
    hi = max(int(s.max()), 1)
    line = np.geomspace(1, hi, 50)
    ax1.plot(line, multiplier * line, color="black", ls="--", lw=1, label=f"rows = {multiplier} x size")
    ax1.set_xscale("log")
    _plain_log_ticks(ax1, "x")
    if (c[keep] == 0).any():  # symlog: zero stays visible, counts above 1 on a log scale
        ax1.set_yscale("symlog", linthresh=1.0)
        ax1.set_ylim(bottom=-0.3)
        from matplotlib.ticker import FuncFormatter

        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    else:
        ax1.set_yscale("log")
        _plain_log_ticks(ax1, "y")
    ax1.set_xlabel("level-1 cluster size (input points)")
    ax1.set_ylabel("curated rows from the cluster (jittered)")
    n_zero = int(((c == 0) & keep).sum())
    ax1.set_title(f"curated rows vs cluster size ({n_zero:,} clusters give none)", fontsize=10)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8, loc="upper left")
    # Right: how evenly the curated rows spread over the clusters (the input sizes are in the
    # cluster-size figure); the two Gini coefficients put the imbalance before/after in numbers.
    edges, symlog = count_edges(c)
    counts, _, _ = ax2.hist(c, bins=edges, color=CURATED_COLOR, edgecolor="white", linewidth=0.4)  # type: ignore[arg-type]  # array bins
    if not symlog:
        ax2.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    else:
        ax2.set_xscale("symlog", linthresh=1.0)
        ax2.set_xlim(left=-0.6)
        from matplotlib.ticker import FuncFormatter

        ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
    nz = counts[counts > 0]  # type: ignore[operator]  # one data set: an array
    if nz.size and nz.max() / nz.min() > 20:
        ax2.set_yscale("log")
        _plain_log_ticks(ax2, "y")
        ax2.set_ylim(top=ax2.get_ylim()[1] * 4)  # room for the Gini box
    else:
        ax2.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
        ax2.set_ylim(top=ax2.get_ylim()[1] * 1.3)
    ax2.set_xlabel("curated rows from a level-1 cluster")
    ax2.set_ylabel("number of clusters")
    ax2.set_title("curated rows per cluster", fontsize=10)
    ax2.text(0.97, 0.97, f"Gini of cluster sizes {_gini(s):.2f}\nGini of curated rows {_gini(c):.2f}\n"
                         f"clusters with rows: {int((c > 0).sum()):,} of {len(c):,}",
             transform=ax2.transAxes, ha="right", va="top", fontsize=8,
             bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Curated set per level-1 cluster", fontsize=12)
    return fig


def plot_scatter_2d(input_pts: pd.DataFrame | None, centroids: Mapping[int, np.ndarray],
                    curated_pts: pd.DataFrame | None) -> Figure:
    """Side-by-side 2-D panels: input, centroids of the lowest and top level, curated set.

    ``input_pts`` / ``curated_pts``: frames with ``x``, ``y`` (the first two coordinates),
    optionally ``label`` (colours) and, for the curated set, ``copies`` (marker size);
    ``centroids``: level -> (n, 2) array. The label legend sits below the panels, where it
    hides no point.
    """
    panels: list[tuple[str, Callable[[Axes], None]]] = []
    label_colors: dict[Any, Any] = {}
    has_labels = input_pts is not None and LABEL_COL in input_pts.columns
    if has_labels:
        keys = sorted_keys(set(input_pts[LABEL_COL].dropna().unique()))  # type: ignore[index]  # has_labels: not None
        palette = _label_palette(len(keys))
        label_colors = {k: palette[i] for i, k in enumerate(keys)}

    def colors_of(pdf: pd.DataFrame) -> Any:
        if has_labels and LABEL_COL in pdf.columns:
            return [label_colors.get(v, "#999999") for v in pdf[LABEL_COL]]
        return INPUT_COLOR

    def background(ax: Axes) -> None:
        if input_pts is not None and len(input_pts):
            ax.scatter(input_pts["x"], input_pts["y"], s=2, color="#a0a0a0", alpha=bg_alpha, edgecolor="none",
                       rasterized=True)

    if input_pts is not None:
        alpha = float(np.clip(6000.0 / max(len(input_pts), 1), 0.2, 0.7))
        bg_alpha = float(np.clip(1500.0 / max(len(input_pts), 1), 0.05, 0.4))

        def draw_input(ax: Axes) -> None:
            ax.scatter(input_pts["x"], input_pts["y"], s=2, c=colors_of(input_pts), alpha=alpha,
                       edgecolor="none", rasterized=True)

        panels.append((f"input ({len(input_pts):,} points)", draw_input))
    for level in sorted(centroids):
        pts = centroids[level]

        def draw_centroids(ax: Axes, pts: np.ndarray = pts) -> None:
            background(ax)
            size = float(np.clip(2000.0 / max(len(pts), 1), 3, 30))
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=AFTER_COLOR, edgecolor="none", alpha=0.8)

        panels.append((f"level-{level} centroids ({len(pts):,})", draw_centroids))
    if curated_pts is not None:
        def draw_curated(ax: Axes) -> None:
            background(ax)
            copies = curated_pts["copies"].to_numpy() if "copies" in curated_pts.columns else np.ones(len(curated_pts))
            size = float(np.clip(4000.0 / max(len(curated_pts), 1), 3, 25))
            ax.scatter(curated_pts["x"], curated_pts["y"], s=size * np.sqrt(copies), c=colors_of(curated_pts),
                       alpha=0.8, edgecolor="none")

        n_rows = int(curated_pts["copies"].sum()) if "copies" in curated_pts.columns else len(curated_pts)
        panels.append((f"curated set ({len(curated_pts):,} points, {n_rows:,} rows)", draw_curated))
    all_xy = [p for p in ([input_pts[["x", "y"]].to_numpy()] if input_pts is not None else [])]
    all_xy += [c for c in centroids.values() if len(c)]
    if curated_pts is not None and len(curated_pts):
        all_xy.append(curated_pts[["x", "y"]].to_numpy())
    xy = np.concatenate(all_xy) if all_xy else np.zeros((1, 2))
    lo, hi = np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)
    span = np.maximum(hi - lo, 1e-9)
    pad = 0.04 * span
    aspect = float(np.clip(span[1] / span[0], 0.3, 2.0))
    n_cols = 2 if len(panels) > 2 or aspect < 0.8 else len(panels)
    n_cols = max(1, min(n_cols, len(panels)))
    n_rows = math.ceil(len(panels) / n_cols)
    width = 5.6 if n_cols == 2 else 4.6
    fig, axes = _figure(n_rows, n_cols, width, max(2.6, width * aspect) + 0.5)
    flat = [ax for row in axes for ax in row]
    for ax, (title, draw) in zip(flat, panels, strict=False):  # the grid may have spare axes
        draw(ax)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("embedding coordinate 1", fontsize=9)
        ax.set_ylabel("embedding coordinate 2", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in flat[len(panels):]:
        ax.set_visible(False)
    if has_labels and 0 < len(label_colors) <= 10 and input_pts is not None:
        from matplotlib.lines import Line2D

        # One legend for the input and the curated panels, outside the axes (the points fill them).
        handles = [Line2D([], [], marker="o", ls="", color=col, label=f"{LABEL_COL} {k}")
                   for k, col in label_colors.items()]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("2-D embeddings: input, centroids, curated set", fontsize=12)
    return fig


def _level_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(n - 1, 1)) for i in range(n)]


def _label_palette(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _gini(sizes: np.ndarray) -> float:
    from curation_spark.method.kernels import size_stats

    return float(size_stats(np.asarray(sizes))["gini"])


def plot_dedup(edges: np.ndarray, counts: np.ndarray, threshold: float, removed: int, points_in: int) -> Figure:
    """How close the removed near-duplicates were to the point kept for them."""
    fig, axes = _figure(1, 1, 6.0, 3.6)
    ax = axes[0][0]
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=CURATED_COLOR, edgecolor="white")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("cosine similarity to the kept twin")
    ax.set_ylabel("removed points")
    ax.set_title(f"{_fmt(removed)} of {_fmt(points_in)} points removed", fontsize=10)
    ax.legend(loc="upper left", framealpha=0.8)
    return fig
