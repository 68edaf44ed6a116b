"""Allows ``python -m curation_spark``."""
import sys

from curation_spark.cli import main

sys.exit(main())
