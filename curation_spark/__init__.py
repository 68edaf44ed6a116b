"""curation-spark: automatic, label-free curation of embedding pools on Apache Spark.

Hierarchical k-means with resampling followed by hierarchical balanced sampling
(Vo et al., 2024), with numeric kernels in numpy/faiss and Spark plumbing apart.
"""
from curation_spark.version import __version__

__all__ = ["__version__"]
