"""spark-submit job: cluster (or resume) then sample -- the whole pipeline (``curation-spark run``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/curate.py \
        --config conf/toy.yaml --set input.path=... --set output.path=... [--overwrite]

The session is the one spark-submit configured (master, packages, confs). Errors: one line
on stderr, exit 2 for user errors (as the CLI; --debug for tracebacks).
"""
import argparse
import sys


def cli_args(argv):
    p = argparse.ArgumentParser(prog="curate.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace a run folder made with a different config")
    p.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    a = p.parse_args(argv)
    sets = [x for kv in a.overrides for x in ("--set", kv)]
    return ["--debug"] * a.debug + ["run", *a.config, *sets] + ["--overwrite"] * a.overwrite


def main(argv=None):
    args = cli_args(sys.argv[1:] if argv is None else argv)
    import curation_spark
    from curation_spark.cli import build_parser, main as cli_main
    from curation_spark.config import load_config
    from curation_spark.errors import CurationError
    from pyspark.sql import SparkSession

    parsed = build_parser().parse_args(args)
    try:  # the whole config is checked before Spark starts, as the CLI does
        load_config(parsed.config, parsed.overrides)
    except CurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Without .master(): spark-submit's settings stand; get_spark() then returns this session.
    spark = SparkSession.builder.getOrCreate()
    print(f"curation_spark {curation_spark.__version__} from {curation_spark.__file__}; "
          f"master {spark.sparkContext.master}", file=sys.stderr)
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
