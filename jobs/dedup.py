"""spark-submit job: near-duplicate removal only (``curation-spark dedup``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/dedup.py \
        --config conf/toy.yaml --set input.path=... --set output.path=... [--overwrite]

The session is the one spark-submit configured (master, packages, confs). Errors: one line
on stderr, exit 2 for user errors (as the CLI; --debug for tracebacks).
"""
import sys

from curation_spark.submit import config_job

#: This job's flags as ``curation-spark dedup`` arguments, and the job itself.
cli_args, main = config_job("dedup", "dedup.py", __doc__)

if __name__ == "__main__":
    sys.exit(main())
