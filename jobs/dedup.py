"""spark-submit job: near-duplicate removal only (``curation-spark dedup``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/dedup.py \
        --config conf/toy.yaml --set input.path=... --set output.path=... [--overwrite]

The session is the one spark-submit configured (master, packages, confs). Errors: one line
on stderr, exit 2 for user errors (as the CLI; --debug for tracebacks).
"""
import sys

from curation_spark.submit import config_job_args, launch


def cli_args(argv):
    """This job's flags as ``curation-spark dedup`` arguments."""
    return config_job_args("dedup", argv, "dedup.py", __doc__.splitlines()[0])


def main(argv=None):
    return launch(cli_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
