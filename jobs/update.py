"""spark-submit job: bring a finished run up to date with its input (``curation-spark update``).

    spark-submit [--master ... --packages io.delta:delta-spark_2.13:4.0.1 ...] jobs/update.py \
        --config conf/toy.yaml --set input.path=... --set output.path=<the run folder>

Meant for a daily schedule between full runs: new rows are assigned to the existing
hierarchy, deleted ones dropped, the curated tables sampled again, drift reported. The
session is the one spark-submit configured. Errors: one line on stderr, exit 2 for user
errors (as the CLI; --debug for tracebacks).
"""
import sys

from curation_spark.submit import config_job

#: This job's flags as ``curation-spark update`` arguments, and the job itself.
cli_args, main = config_job("update", "update.py", __doc__, overwrite=False)

if __name__ == "__main__":
    sys.exit(main())
