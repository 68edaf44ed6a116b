"""spark-submit job: balanced sampling over an existing run folder (``curation-spark sample``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/sample.py \
        --run RUN_FOLDER --target-size 100000 [--multiplier 1] [--strategy r|c] [--seed 0] \
        [--table NAME] [--keep-columns label,url]
"""
import argparse
import sys


def cli_args(argv):
    p = argparse.ArgumentParser(prog="sample.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder written by jobs/cluster.py or jobs/curate.py")
    p.add_argument("--target-size", required=True, type=int, help="number of samples to select")
    p.add_argument("--multiplier", type=int, default=1, help="max copies of one point (default 1)")
    p.add_argument("--strategy", choices=["r", "c"], default="r", help="r: random within a cluster; c: closest first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="name of the curated table written in the run folder")
    p.add_argument("--keep-columns", default="", help="comma-separated input columns to carry over")
    p.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    a = p.parse_args(argv)
    return ["--debug"] * a.debug + [
        "sample", "--run", a.run, "--target-size", str(a.target_size), "--multiplier", str(a.multiplier),
        "--strategy", a.strategy, "--seed", str(a.seed), "--keep-columns", a.keep_columns,
    ] + (["--table", a.table] if a.table else [])


def main(argv=None):
    from curation_spark.submit import launch

    return launch(cli_args(sys.argv[1:] if argv is None else argv), check_config=False)


if __name__ == "__main__":
    sys.exit(main())
