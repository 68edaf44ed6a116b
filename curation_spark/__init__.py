"""curation-spark: automatic, label-free curation of embedding pools on Apache Spark.

Hierarchical k-means with resampling followed by hierarchical balanced sampling
(Vo et al., 2024), with numeric kernels in numpy/faiss and Spark plumbing apart.
"""
import logging as _logging

from curation_spark.version import __version__

# faiss's loader logs its AVX probing at INFO on import ("Could not load library with AVX2
# support due to: ModuleNotFoundError"), which reads like a failure; its errors still show.
_logging.getLogger("faiss.loader").setLevel(_logging.WARNING)

__all__ = ["__version__"]
