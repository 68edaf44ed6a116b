"""spark-submit job: build (or resume) the hierarchical k-means only (``curation-spark cluster``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/cluster.py \
        --config conf/toy.yaml --set input.path=... --set output.path=... [--overwrite]

The session is the one spark-submit configured (master, packages, confs). Errors: one line
on stderr, exit 2 for user errors (as the CLI; --debug for tracebacks).
"""
import sys

from curation_spark.submit import config_job

#: This job's flags as ``curation-spark cluster`` arguments, and the job itself.
cli_args, main = config_job("cluster", "cluster.py", __doc__)

if __name__ == "__main__":
    sys.exit(main())
