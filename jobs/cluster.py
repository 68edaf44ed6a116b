"""spark-submit job: build (or resume) the hierarchical k-means only (``curation-spark cluster``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/cluster.py \
        --config conf/toy.yaml --set input.path=... --set output.path=... [--overwrite]

The session is the one spark-submit configured (master, packages, confs). Errors: one line
on stderr, exit 2 for user errors (as the CLI; --debug for tracebacks).
"""
import sys

from curation_spark.submit import config_job_args, launch


def cli_args(argv):
    """This job's flags as ``curation-spark cluster`` arguments."""
    return config_job_args("cluster", argv, "cluster.py", __doc__.splitlines()[0])


def main(argv=None):
    return launch(cli_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
