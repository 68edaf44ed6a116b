"""``curation-spark`` command line.

Every command takes a YAML config (``conf/*.yaml``) plus repeated ``--set key=value``
overrides; the config is validated completely before Spark starts. User errors print one
line (``error: ...``) and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from curation_spark.errors import ConfigError, CurationError

log = logging.getLogger("curation_spark")

DESCRIPTION = """\
Automatic, label-free curation of embedding tables on Spark: hierarchical k-means with
resampling, then hierarchical balanced sampling (Vo et al., 2024). Typical use:

  curation-spark synth rings --out data/rings            # toy data (or bring your own table)
  curation-spark validate conf/toy.yaml --set input.path=data/rings
  curation-spark run conf/toy.yaml --set input.path=data/rings --set output.path=runs/toy
  curation-spark report --run runs/toy
  curation-spark update conf/toy.yaml --set input.path=data/rings --set output.path=runs/toy   # after new rows

Configs: YAML files, or a packaged recipe by name (toy, kmeans, ...: curation-spark configs); \
override any key with --set section.key=value (YAML values, e.g.
--set clustering.n_clusters=[100,20]). Reference (ssl-data-curation) config files load
as the clustering section.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="*", help="YAML config file(s) or packaged recipe names (`curation-spark "
                   "configs`); later ones override earlier ones")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set clustering.n_iters=20 (repeatable)")


def _add_run_folder_flags(p: argparse.ArgumentParser, fresh: bool = False) -> None:
    """``--overwrite`` (every command that opens a run folder for writing), ``--fresh``
    (the commands that cluster)."""
    p.add_argument("--overwrite", action="store_true", help="replace a run folder made with a different config")
    if fresh:
        p.add_argument("--fresh", action="store_true", help="cluster from scratch if the folder's run was fit to an "
                       "older input (it has updates, or the input changed): the scheduled full re-cluster of a folder "
                       "`update` keeps current; a run of this very input resumes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curation-spark", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic embedding table (toy rings or a long-tailed mixture)",
                       description="Write a seeded synthetic table with id, embedding and a ground-truth label "
                                   "column (never read by the algorithm).")
    p.add_argument("kind", choices=["rings", "mixture"], help="rings: the paper's 2-D toy data (29,700 points); "
                   "mixture: long-tailed Gaussian mixture")
    p.add_argument("--out", required=True, help="output folder for the table")
    p.add_argument("--format", default="delta", choices=["delta", "parquet"])
    p.add_argument("--n", type=int, default=100_000, help="mixture: number of points")
    p.add_argument("--dim", type=int, default=64, help="mixture: embedding dimension")
    p.add_argument("--components", type=int, default=100, help="mixture: number of components")
    p.add_argument("--alpha", type=float, default=1.0, help="mixture: power-law exponent of component weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--files", type=int, default=4, help="number of files to write")
    p.add_argument("--partitioned", action="store_true",
                   help="mixture: partition the table by a 'shard' column (one id range per shard)")

    p = sub.add_parser("validate", help="check an input table (columns, types, nulls, dimensions, NaN/Inf, ids)",
                       description="Read input.path / input.table and check it in one pass.")
    _add_config_args(p)

    p = sub.add_parser("dedup", help="remove near-duplicates (cosine >= dedup.threshold) into output.path",
                       description="Semantic near-duplicate removal: coarse k-means, pairs inside each cluster and "
                                   "its probed neighbours, the keep rule; writes dedup/duplicates (id, kept_id, "
                                   "similarity) under output.path. `cluster` / `run` with a dedup section build the "
                                   "hierarchy on the kept points.")
    _add_config_args(p)
    _add_run_folder_flags(p)

    p = sub.add_parser("cluster", help="build (or resume) the hierarchical k-means in output.path",
                       description="Hierarchical k-means with resampling; writes level_<l>/centroids and "
                                   "level_<l>/assignments under output.path. Re-running resumes after the last "
                                   "completed level.")
    _add_config_args(p)
    _add_run_folder_flags(p, fresh=True)

    p = sub.add_parser("sample", help="balanced sampling over an existing hierarchy (no re-clustering)",
                       description="Hierarchical balanced sampling over the hierarchy in --run; writes a new table "
                                   "in the run folder.")
    p.add_argument("--run", required=True, dest="run_path", help="run folder written by `cluster` or `run`")
    p.add_argument("--target-size", type=int, required=True, help="number of samples to select")
    p.add_argument("--multiplier", type=int, default=1, help="max copies of one point (default 1)")
    p.add_argument("--strategy", choices=["r", "c"], default="r",
                   help="r: random points within a cluster; c: closest to the centroid first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="name of the table to write in the run folder "
                   "(default curated_<target>_<strategy>_m<multiplier>_s<seed>)")
    p.add_argument("--keep-columns", default="", help="comma-separated input columns to carry over")

    p = sub.add_parser("run", help="cluster, then sample: the whole pipeline",
                       description="Cluster (or resume) and write the curated table (sampling.table_name).")
    _add_config_args(p)
    _add_run_folder_flags(p, fresh=True)

    p = sub.add_parser("update", help="bring a finished run up to date with its grown (or shrunk) input",
                       description="Assign the input's new rows to the existing hierarchy (nearest level-1 centroid, "
                                   "no centroid moves), drop rows gone from the input, update every level's sizes, "
                                   "sample the curated tables again and report drift. Delta inputs with the change "
                                   "data feed on are read incrementally; others are compared by id. Atomic: an "
                                   "interrupted update leaves the run as it was, or is finished by the next one.")
    _add_config_args(p)

    p = sub.add_parser("report", help="write an HTML report with figures for a run folder")
    p.add_argument("--run", required=True, dest="run_path", help="run folder")
    p.add_argument("--out", default=None, help="output folder for report.html (default <run>/report)")
    p.add_argument("--table", default=None, help="curated table to describe (default: the last one written)")
    p.add_argument("--input", default=None, help="input table to compare against (default: the run's input)")

    sub.add_parser("configs", help="list the packaged config recipes (usable by name: `run toy ...`)",
                   description="The config recipes that ship with the package. A CONFIG argument that is not a "
                               "file but one of these names (with or without .yaml) loads the packaged recipe.")

    p = sub.add_parser("demo", help="the README demo: toy rings -> run -> per-ring counts -> report")
    p.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    p.add_argument("--format", default="delta", choices=["delta", "parquet"])
    for command in sub.choices.values():  # also after the command: `curation-spark run CONFIG --debug`
        _add_global_flags(command, argparse.SUPPRESS)
    return parser


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """``--debug`` and ``--quiet``; a command's copies default to SUPPRESS so they only
    override the top-level value when given."""
    parser.add_argument("--debug", "--verbose", dest="debug", action="store_true", default=default,
                        help="debug logging and full tracebacks on error")
    parser.add_argument("--quiet", action="store_true", default=default, help="only warnings and errors")


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("py4j").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.debug, args.quiet)
    try:
        return _dispatch(args)
    except CurationError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `curation-spark configs | head`: the reader left; no error to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (so the exit flush stays quiet)
        return 141
    except Exception as exc:  # unexpected: one line, traceback with --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {type(exc).__name__}: {first}\n(run with --debug for the full traceback)", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from curation_spark import pipeline, tracking
    from curation_spark.config import load_config
    from curation_spark.io import paths, preflight

    if args.command == "synth":
        return _synth(args)
    if args.command == "configs":
        return _list_configs()
    if args.command == "demo":
        from curation_spark.demo import run_demo

        run_demo(args.out, args.format)
        return 0
    if args.command == "report":
        from curation_spark.config import DEFAULTS
        from curation_spark.report import write_report

        if preflight.applies(DEFAULTS["spark"]["master"]):
            preflight.check_run_folder(args.run_path)

        path = write_report(args.run_path, out_dir=args.out, table=args.table, input_path=args.input)
        print(f"report: {paths.display(path)}")
        return 0
    if args.command == "sample":
        from curation_spark.config import sampling_only_config

        keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()]
        config = sampling_only_config(args.target_size, args.multiplier, args.strategy, args.seed, keep)  # before Spark
        if preflight.applies(config.spark.master):
            preflight.check_run_folder(args.run_path)
        name = args.table or f"curated_{args.target_size}_{args.strategy}_m{args.multiplier}_s{args.seed}"
        summary = pipeline.sample(config, run_path=args.run_path, table_name=name)
        print(_curated_line(summary, config.sampling.target_size))  # type: ignore[arg-type]  # sample() needs it
        return 0

    config = load_config(args.config, args.overrides)
    tracking.check_available(config)
    if preflight.applies(config.spark.master):  # path mistakes in a second, before Spark starts
        config = pipeline.qualified_paths(config, None)  # (a local session: this machine's folders)
        preflight.check_config_paths(config)
        preflight.check_input_schema(config, keep_columns=args.command == "run")  # column mistakes too
    if args.command == "validate":
        stats = pipeline.validate(config)
        print(f"ok: {stats.n_rows} rows, dimension {stats.dim}")
        return 0
    if args.command == "dedup":
        result = pipeline.dedup(config, overwrite=args.overwrite)
        print(f"dedup: removed {result.removed} of {result.points_in} points ({result.groups} groups) at cosine "
              f">= {result.threshold}, {result.pairs_compared} pairs compared, {result.seconds:.1f} s")
        print(f"duplicates: {paths.display(result.path)}")
        return 0
    if args.command == "cluster":
        summary = pipeline.cluster(config, overwrite=args.overwrite, fresh=args.fresh)
        _print_levels(summary)
        _track(config, summary.run_path, "cluster")
        return 0
    if args.command == "update":
        updated = pipeline.update(config)
        print(updated.message)
        _track(config, updated.run_path, "update")
        return 0
    if args.command == "run":
        summary = pipeline.run(config, overwrite=args.overwrite, fresh=args.fresh)
        _print_levels(summary)
        print(_curated_line(summary, config.sampling.target_size))  # type: ignore[arg-type]  # run() needs it
        _track(config, summary.run_path, "run")
        return 0
    raise CurationError(f"unknown command {args.command}")


def _track(config, run_path: str, command: str) -> None:
    """``tracking.mlflow``: the run folder into MLflow, and the run id on a line."""
    if not config.tracking.mlflow:
        return
    from curation_spark import tracking
    from curation_spark.io.session import get_spark

    print(f"mlflow run: {tracking.track(config, run_path, get_spark(config.spark), command=command)}")


def _list_configs() -> int:
    from curation_spark import recipes

    found = recipes.available()
    width = max((len(name) for name in found), default=0)
    for name, recipe in found.items():
        print(f"{name:<{width}}  {recipes.summary(recipe)}")
    return 0


def _curated_line(summary, target_size: int) -> str:
    """The curated table's line; says loudly when capacity kept it below the target."""
    from curation_spark.io import paths

    line = f"curated table: {paths.display(summary.curated_path)} ({summary.curated_rows} rows)"
    if summary.curated_rows < target_size:
        line += (f" -- FEWER THAN THE TARGET {target_size}: the hierarchy's points, each at most "
                 "sampling.multiplier times, are all there is")
    return line


def _print_levels(summary) -> None:
    from curation_spark.io import paths

    if summary.dedup is not None:
        d = summary.dedup
        print(f"dedup: {d.removed} of {d.points_in} points removed as near-duplicates (cosine >= {d.threshold})")
    for info in summary.levels:
        s = info.sizes
        print(f"level {info.level}: {info.n_clusters} clusters over {info.n_points} points, "
              f"sizes min/median/max {s['min']}/{s['median']}/{s['max']}, gini {s['gini']:.3f}, "
              f"objective {info.objective:.6g}, {info.seconds:.1f} s")
    if summary.distance is not None:
        print(f"distance: {summary.distance}")
    print(f"run folder: {paths.display(summary.run_path)}")


def _synth(args: argparse.Namespace) -> int:
    from curation_spark import synth
    from curation_spark.curation.commands import write_mixture, write_synthetic
    from curation_spark.io import paths
    from curation_spark.io.session import get_spark

    if args.kind == "rings":
        table = synth.make_rings(seed=args.seed)
        spark = get_spark()
        write_synthetic(spark, table, paths.qualify(spark, args.out, "--out"), args.format, n_files=args.files)
        n_rows = table.num_rows
    else:
        try:  # argument errors before Spark starts
            synth.iter_gaussian_mixture_batches(args.n, args.dim, args.components, seed=args.seed, alpha=args.alpha)
        except ValueError as exc:
            raise ConfigError(f"synth mixture: {exc}") from None
        spark = get_spark()
        write_mixture(spark, paths.qualify(spark, args.out, "--out"), args.n, args.dim, args.components,
                      seed=args.seed, alpha=args.alpha, n_files=args.files, fmt=args.format,
                      partition_by_shard=args.partitioned)
        n_rows = args.n
    print(f"wrote {n_rows} rows ({args.kind}) to {args.out} as {args.format}")
    return 0
