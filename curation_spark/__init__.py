"""curation-spark: automatic, label-free curation of embedding pools on Apache Spark.

Hierarchical k-means with resampling followed by hierarchical balanced sampling
(Vo et al., 2024), with numeric kernels in numpy/faiss and Spark plumbing apart.

>>> import curation_spark as cs
>>> from curation_spark import synth
>>> spark = cs.session()
>>> df = spark.createDataFrame(synth.make_gaussian_mixture(2000, 8, 6, seed=0))  # id, embedding
>>> config = cs.Config.from_dict({"output": {"path": "runs/nb"}, "sampling": {"target_size": 500},
...                               "clustering": {"n_levels": 2, "n_clusters": [100, 10]}})
>>> run = cs.run(config, df)
>>> run.curated().count(), [lv.n_clusters for lv in run.levels]
(500, [100, 10])
"""
import logging as _logging

from curation_spark.version import __version__

# faiss's loader logs its AVX probing at INFO on import ("Could not load library with AVX2
# support due to: ModuleNotFoundError"), which reads like a failure; its errors still show.
_logging.getLogger("faiss.loader").setLevel(_logging.WARNING)

from curation_spark.api import Run, cluster, dedup, open_run, run, session, validate  # noqa: E402  (faiss.loader's log level is set first)
from curation_spark.config import Config, ConfigError  # noqa: E402  (faiss.loader's log level is set first)

__all__ = ["__version__", "Config", "ConfigError", "Run", "session", "validate", "dedup", "cluster", "run",
           "open_run"]
