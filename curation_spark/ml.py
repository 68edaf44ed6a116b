"""Hierarchical k-means with resampling as a ``pyspark.ml`` Estimator.

:class:`HierarchicalKMeans` is an :class:`~pyspark.ml.Estimator` whose ``fit`` clusters a
DataFrame with the library (:func:`curation_spark.api.cluster`) and returns a
:class:`HierarchicalKMeansModel`, a :class:`~pyspark.ml.Model` over the run folder the fit
wrote: ``transform`` adds the level-1 cluster (``prediction``) and the clusters at every
level (``cluster_path``), ``clusterCenters`` gives a level's centroids, ``balancedSample``
the curated ids of the fit data (hierarchical balanced sampling). Both stages work inside a
:class:`~pyspark.ml.Pipeline` and are saved and loaded like pyspark's own stages.

Defaults
    Every clustering default is the library's (:class:`curation_spark.config.ClusteringConfig`,
    :class:`~curation_spark.config.InputConfig`, :class:`~curation_spark.config.OutputConfig`,
    :class:`~curation_spark.config.SamplingConfig` field defaults), so the Estimator and the CLI
    give the same hierarchy for the same settings; ``featuresCol`` / ``predictionCol`` keep
    pyspark.ml's names (``features``, ``prediction``).

Where the fit's tables go (``runPath``)
    With ``runPath`` the run folder is there, a folder the user owns: a fit of the same
    settings and rows resumes it (returns at once when it is complete), one of other
    settings or rows is refused with one line, as for ``curation-spark cluster``. Without
    it, a local session (``local[*]`` master, or a Spark Connect server on this machine with
    a local master) gets a fresh temporary folder below ``spark.local.dir`` (else the
    system's temporary folder), deleted when this Python process exits; on a cluster, or a
    Spark Connect server elsewhere, executors cannot read a folder on this machine's disk,
    so the fit is refused with one line asking for ``runPath``.

Persistence
    ``model.write().save(path)`` writes pyspark's ``metadata`` folder (class, uid, params)
    plus where the run folder is. A run folder of the user's (``runPath`` given) is
    referenced, not copied (it holds an assignment per point; it stays the unit of state, as
    for the CLI): the loaded model reads it there and fails with one line when it is gone. A
    temporary run folder (and the one inside a loaded model's folder) is copied into
    ``<path>/run``, so the saved model outlives this process. A loaded model needs no Python
    object of the fit: ``transform``, ``clusterCenters``, ``summary`` and ``balancedSample``
    read the run folder.

``transform``
    The rule of ``update`` and :meth:`curation_spark.api.Run.assign`: each row goes to its
    nearest level-1 centroid (with the level's own assignment settings: the centroid index
    when K is large), then up the parent chain; nothing is written. The result is joined
    back to the input on ``idCol``, which must be unique and non-null, as everywhere in the
    library (a repeated id repeats its rows; a null id gets null clusters). For the fit's
    own rows the prediction is the run's level-1 assignment whenever the level ends with an
    exact assignment pass (the default; not for levels split with ``nSplits`` > 1, whose
    points stay in their parent's sub-clusters, nor always on the approximate index path).

Spark Connect
    Both stages are classic ``pyspark.ml`` stages (not ``pyspark.ml.connect``'s separate
    base classes) written in Python over DataFrame APIs and the library's Connect-aware run
    folder (no ``sparkContext``, JVM or RDD), so ``fit``, ``transform``, ``clusterCenters``,
    ``summary``, ``balancedSample``, save and load run unchanged on a Spark Connect session,
    and so does a Pipeline with pyspark's JVM-backed stages (which pyspark 4 runs on the
    server). Tested (``tests/test_ml.py``, the test marked ``cluster``): a client of
    pyspark's own Connect server on this machine (``local[2]``) fits a Pipeline of a
    ``Normalizer`` and this Estimator with ``runPath``, saves and loads both the model and
    the PipelineModel, transforms, samples and reads the summary and centroids, all equal to
    the classic fit. Not tested: a Connect server on another machine (Databricks serverless),
    where ``runPath`` must be a folder the server and this client both reach, as for the
    library's commands; and the temporary folder behind a Connect server on this machine.

Examples
--------
>>> import numpy as np
>>> from curation_spark.ml import HierarchicalKMeans, HierarchicalKMeansModel
>>> hkm = HierarchicalKMeans(featuresCol="embedding", nLevels=2, nClusters=[12, 3], nIters=5,
...                          runPath="runs/hkm")
>>> model = hkm.fit(df)  # df: id and embedding columns
>>> model.transform(df).select("id", "prediction", "cluster_path").columns
['id', 'prediction', 'cluster_path']
>>> model.balancedSample(1000).count()
1000
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, HasSeed
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from curation_spark.config import DISTANCES, ClusteringConfig, Config, InputConfig, OutputConfig, SamplingConfig
from curation_spark.curation.assign import CLUSTER_PATH
from curation_spark.errors import ConfigError, CurationError
from curation_spark.io import paths
from curation_spark.io.spark_api import is_connect, master, server_is_local

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from curation_spark.api import Run

__all__ = ["HierarchicalKMeans", "HierarchicalKMeansModel", "HierarchicalKMeansSummary", "LevelSummary"]

_CLUSTERING = ClusteringConfig()
_INPUT = InputConfig()
_OUTPUT = OutputConfig()
_SAMPLING = SamplingConfig()

#: ``distanceMeasure`` (pyspark.ml's names, as ``KMeans``) -> ``clustering.distance``.
DISTANCE_MEASURES = {"auto": "auto", "euclidean": "l2", "cosine": "cosine"}
assert set(DISTANCE_MEASURES.values()) == set(DISTANCES)
_MEASURE_OF = {v: k for k, v in DISTANCE_MEASURES.items()}

#: The library's config keys and the Params that set them (error lines name the Param).
PARAM_KEYS = {
    "clustering.n_levels": "nLevels", "clustering.n_clusters": "nClusters", "clustering.n_iters": "nIters",
    "clustering.n_splits": "nSplits", "clustering.n_resampling_steps": "nResamplingSteps",
    "clustering.sample_size": "sampleSize", "clustering.sampling_strategy": "samplingStrategy",
    "clustering.distance": "distanceMeasure", "clustering.init": "init", "clustering.seed": "seed",
    "input.id_col": "idCol", "input.embedding_col": "featuresCol", "output.path": "runPath",
    "output.format": "outputFormat",
}
_KEY_PATTERN = re.compile("|".join(re.escape(k) for k in sorted(PARAM_KEYS, key=len, reverse=True)) + r"(?![\w.])")

#: Folder of a saved model that holds its copy of a run folder.
MODEL_RUN_FOLDER = "run"


def _param_names(message: str) -> str:
    """An error line of the library with its config keys spelled as the Params (and the
    CLI's ``--overwrite`` advice as what a caller of ``fit`` can do)."""
    message = message.replace("or pass --overwrite to replace it", "or delete that folder")
    return _KEY_PATTERN.sub(lambda m: PARAM_KEYS[m.group(0)], message)


def _translated(exc: CurationError) -> CurationError:
    """The same error (same type, same traceback) naming Params instead of config keys."""
    return type(exc)(_param_names(str(exc))).with_traceback(exc.__traceback__)


# --------------------------------------------------------------------------- converters


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _to_per_level_ints(value: Any) -> list[int]:
    """One int for every level, or a list of them (one per level)."""
    if _is_int(value):
        return [int(value)]
    return TypeConverters.toListInt(value)


def _to_sample_sizes(value: Any) -> list[int | None]:
    """``sampleSize``: None (half the level's mean cluster size), an int, or a list of them."""
    if value is None or _is_int(value):
        return [None if value is None else int(value)]
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise TypeError(f"could not convert {value!r} to a list of sample sizes (ints or None)")
    return [None if v is None else TypeConverters.toInt(v) for v in value]


def _to_strategies(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return TypeConverters.toListString(value)


def _to_optional_string(value: Any) -> str | None:
    return None if value is None else TypeConverters.toString(value)


# --------------------------------------------------------------------------- params


_P = TypeVar("_P", bound="_HierarchicalKMeansParams")


class _HierarchicalKMeansParams(HasFeaturesCol, HasPredictionCol, HasSeed):
    """The Params of :class:`HierarchicalKMeans` and :class:`HierarchicalKMeansModel`.

    Per-level Params (``nClusters``, ``nIters``, ``nSplits``, ``nResamplingSteps``,
    ``sampleSize``, ``samplingStrategy``) take one value per level; any of them but
    ``nClusters`` may also be one value (or a one-element list) for every level."""

    idCol: Param[str] = Param(Params._dummy(), "idCol", "unique, non-null id column of the rows",
                                typeConverter=TypeConverters.toString)
    clusterPathCol: Param[str] = Param(Params._dummy(), "clusterPathCol",
                                         "output column: cluster ids at levels 1..nLevels (array<long>)",
                                         typeConverter=TypeConverters.toString)
    nLevels: Param[int] = Param(Params._dummy(), "nLevels", "number of levels of the hierarchy (>= 1)",
                                  typeConverter=TypeConverters.toInt)
    nClusters: Param[list[int]] = Param(Params._dummy(), "nClusters", "clusters per level, one value per level",
                                          typeConverter=_to_per_level_ints)
    nIters: Param[list[int]] = Param(Params._dummy(), "nIters", "Lloyd iterations per level",
                                       typeConverter=_to_per_level_ints)
    nSplits: Param[list[int]] = Param(Params._dummy(), "nSplits",
                                        "sub-clusters each cluster is split into, per level (1: no split)",
                                        typeConverter=_to_per_level_ints)
    nResamplingSteps: Param[list[int]] = Param(Params._dummy(), "nResamplingSteps",
                                                 "resampling steps per level (0: plain k-means)",
                                                 typeConverter=_to_per_level_ints)
    sampleSize: Param[list[int | None]] = Param(
        Params._dummy(), "sampleSize",
        "points taken from every cluster per resampling step, per level (None: half the level's mean cluster size)",
        typeConverter=_to_sample_sizes)
    samplingStrategy: Param[list[str]] = Param(
        Params._dummy(), "samplingStrategy",
        "resampling: 'c' the points closest to the centroid, 'r' at random; per level",
        typeConverter=_to_strategies)
    distanceMeasure: Param[str] = Param(
        Params._dummy(), "distanceMeasure",
        "'auto' (cosine for unit-norm features, else euclidean), 'euclidean' or 'cosine'",
        typeConverter=TypeConverters.toString)
    init: Param[str] = Param(Params._dummy(), "init", "initialisation: auto, kmeans++, two_level or random",
                               typeConverter=TypeConverters.toString)
    runPath: Param[str | None] = Param(
        Params._dummy(), "runPath",
        "run folder of the fit's tables (None: a temporary folder, local sessions only)",
        typeConverter=_to_optional_string)
    outputFormat: Param[str] = Param(Params._dummy(), "outputFormat", "format of the run's tables: delta or parquet",
                                       typeConverter=TypeConverters.toString)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._setDefault(
            idCol=_INPUT.id_col,
            clusterPathCol=CLUSTER_PATH,
            nLevels=_CLUSTERING.n_levels,
            nClusters=list(_CLUSTERING.n_clusters),
            nIters=list(_CLUSTERING.n_iters),
            nSplits=list(_CLUSTERING.n_splits),
            nResamplingSteps=list(_CLUSTERING.n_resampling_steps),
            sampleSize=list(_CLUSTERING.sample_size),
            samplingStrategy=list(_CLUSTERING.sampling_strategy),
            distanceMeasure=_MEASURE_OF[_CLUSTERING.distance],
            init=_CLUSTERING.init,
            seed=_CLUSTERING.seed,
            runPath=_OUTPUT.path,
            outputFormat=_OUTPUT.format,
        )

    # The column setters both stages have (the Estimator's for ``fit``, the Model's for
    # ``transform``); the clustering setters are the Estimator's only.
    def setFeaturesCol(self: _P, value: str) -> _P:
        """Sets ``featuresCol`` (array<float>, array<double> or an ML Vector)."""
        return self._set(featuresCol=value)

    def setIdCol(self: _P, value: str) -> _P:
        """Sets ``idCol`` (unique, non-null ids: what ``transform`` joins on)."""
        return self._set(idCol=value)

    def setPredictionCol(self: _P, value: str) -> _P:
        """Sets ``predictionCol`` (the level-1 cluster id)."""
        return self._set(predictionCol=value)

    def setClusterPathCol(self: _P, value: str) -> _P:
        """Sets ``clusterPathCol`` (the cluster ids at levels 1..L)."""
        return self._set(clusterPathCol=value)

    def getIdCol(self) -> str:
        """The value of ``idCol``."""
        return self.getOrDefault(self.idCol)

    def getClusterPathCol(self) -> str:
        """The value of ``clusterPathCol``."""
        return self.getOrDefault(self.clusterPathCol)

    def getNLevels(self) -> int:
        """The value of ``nLevels``."""
        return self.getOrDefault(self.nLevels)

    def getNClusters(self) -> list[int]:
        """The value of ``nClusters``."""
        return self.getOrDefault(self.nClusters)

    def getNIters(self) -> list[int]:
        """The value of ``nIters``."""
        return self.getOrDefault(self.nIters)

    def getNSplits(self) -> list[int]:
        """The value of ``nSplits``."""
        return self.getOrDefault(self.nSplits)

    def getNResamplingSteps(self) -> list[int]:
        """The value of ``nResamplingSteps``."""
        return self.getOrDefault(self.nResamplingSteps)

    def getSampleSize(self) -> list[int | None]:
        """The value of ``sampleSize``."""
        return self.getOrDefault(self.sampleSize)

    def getSamplingStrategy(self) -> list[str]:
        """The value of ``samplingStrategy``."""
        return self.getOrDefault(self.samplingStrategy)

    def getDistanceMeasure(self) -> str:
        """The value of ``distanceMeasure``."""
        return self.getOrDefault(self.distanceMeasure)

    def getInit(self) -> str:
        """The value of ``init``."""
        return self.getOrDefault(self.init)

    def getRunPath(self) -> str | None:
        """The value of ``runPath`` (on a model: the run folder it reads)."""
        return self.getOrDefault(self.runPath)

    def getOutputFormat(self) -> str:
        """The value of ``outputFormat``."""
        return self.getOrDefault(self.outputFormat)

    def toConfig(self) -> Config:
        """The library config these Params stand for (``input.id_col`` / ``input.embedding_col``
        from ``idCol`` / ``featuresCol``, ``output.path`` from ``runPath``), validated: a bad
        value is one :class:`~curation_spark.errors.ConfigError` line naming the Param.

        Examples
        --------
        >>> HierarchicalKMeans(nLevels=2, nClusters=[12, 3], nIters=5).toConfig().clustering.n_iters
        (5, 5)
        """
        n_levels = self.getNLevels()

        def per_level(values: list | None, default: tuple) -> Any:
            values = list(default) if values is None else list(values)
            return values[0] if len(values) == 1 else values  # (one value: every level)

        distance = self.getDistanceMeasure()
        if distance not in DISTANCE_MEASURES:
            raise ConfigError(f"distanceMeasure: unknown value {distance!r} (choose one of: "
                              f"{', '.join(DISTANCE_MEASURES)})")
        clusters = self.getNClusters()
        data = {
            "input": {"id_col": self.getIdCol(), "embedding_col": self.getFeaturesCol()},
            "output": {"path": self.getRunPath(), "format": self.getOutputFormat()},
            "clustering": {
                "n_levels": n_levels,
                "n_clusters": list(_CLUSTERING.n_clusters) if clusters is None else list(clusters),
                "n_iters": per_level(self.getNIters(), _CLUSTERING.n_iters),
                "n_splits": per_level(self.getNSplits(), _CLUSTERING.n_splits),
                "n_resampling_steps": per_level(self.getNResamplingSteps(), _CLUSTERING.n_resampling_steps),
                "sample_size": per_level(self.getSampleSize(), _CLUSTERING.sample_size),
                "sampling_strategy": per_level(self.getSamplingStrategy(), _CLUSTERING.sampling_strategy),
                "distance": DISTANCE_MEASURES[distance],
                "init": self.getInit(),
                "seed": self.getSeed(),
            },
        }
        try:
            return Config.from_dict(data)
        except ConfigError as exc:
            raise _translated(exc) from None

    def _check_input(self, df: DataFrame) -> None:
        """``idCol`` and ``featuresCol`` exist with usable types (schema only, no Spark job)."""
        from curation_spark.io.tables import check_columns

        try:
            check_columns(df, self.getIdCol(), self.getFeaturesCol())
        except CurationError as exc:
            raise _translated(exc) from None


# --------------------------------------------------------------------------- the estimator


class HierarchicalKMeans(_HierarchicalKMeansParams, Estimator["HierarchicalKMeansModel"], MLReadable, MLWritable):
    """Hierarchical k-means with resampling (Vo et al., 2024) as a pyspark.ml Estimator.

    Level 1 clusters the rows of ``featuresCol`` (array<float>, array<double> or an ML
    Vector) into ``nClusters[0]`` clusters; level l > 1 clusters the centroids of level
    l - 1. Each level resamples (``nResamplingSteps``, ``sampleSize``,
    ``samplingStrategy``) so its centroids spread over the data's support instead of
    following its density, which is what the balanced sample of the model draws on.
    Every default is the library's (``ClusteringConfig()`` and friends).

    Parameters
    ----------
    featuresCol, idCol : str
        Embedding column and unique id column of the rows to cluster.
    predictionCol, clusterPathCol : str
        Output columns of the model's ``transform``: the level-1 cluster (long) and the
        clusters at levels 1..nLevels (array<long>).
    nLevels : int
        Number of levels.
    nClusters, nIters, nSplits, nResamplingSteps, sampleSize, samplingStrategy : list
        Per-level settings (``clustering.*`` of the config); all but ``nClusters`` may be one
        value for every level. ``sampleSize`` None: half the level's mean cluster size.
    distanceMeasure : str
        ``auto`` (cosine for unit-norm features, else euclidean), ``euclidean`` or ``cosine``.
    init : str
        ``auto``, ``kmeans++``, ``two_level`` or ``random``.
    seed : int
        Seed of every random choice of the fit.
    runPath : str, optional
        Run folder for the fit's tables; None: a temporary folder (local sessions only; see
        the module documentation).
    outputFormat : str
        ``delta`` or ``parquet`` tables in the run folder.

    Examples
    --------
    >>> from pyspark.ml import Pipeline
    >>> from pyspark.ml.feature import Normalizer
    >>> hkm = HierarchicalKMeans(nLevels=2, nClusters=[12, 3], nIters=5, seed=1)
    >>> hkm.getNClusters(), hkm.getNIters()
    ([12, 3], [5])
    >>> from pyspark.ml.functions import array_to_vector
    >>> vectors = df.select("id", array_to_vector("embedding").alias("raw"))
    >>> pipeline = Pipeline(stages=[Normalizer(inputCol="raw", outputCol="features"), hkm])
    >>> fitted = pipeline.fit(vectors)  # (no runPath: a temporary run folder)
    >>> fitted.transform(vectors).columns
    ['id', 'raw', 'features', 'prediction', 'cluster_path']
    """

    @keyword_only
    def __init__(self, *, featuresCol: str | None = None, idCol: str | None = None,
                 predictionCol: str | None = None, clusterPathCol: str | None = None,
                 nLevels: int | None = None, nClusters: int | Sequence[int] | None = None,
                 nIters: int | Sequence[int] | None = None, nSplits: int | Sequence[int] | None = None,
                 nResamplingSteps: int | Sequence[int] | None = None,
                 sampleSize: int | Sequence[int | None] | None = None,
                 samplingStrategy: str | Sequence[str] | None = None, distanceMeasure: str | None = None,
                 init: str | None = None, seed: int | None = None, runPath: str | None = None,
                 outputFormat: str | None = None) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)  # type: ignore[attr-defined]  # set by @keyword_only

    @keyword_only
    def setParams(self, *, featuresCol: str | None = None, idCol: str | None = None,
                  predictionCol: str | None = None, clusterPathCol: str | None = None,
                  nLevels: int | None = None, nClusters: int | Sequence[int] | None = None,
                  nIters: int | Sequence[int] | None = None, nSplits: int | Sequence[int] | None = None,
                  nResamplingSteps: int | Sequence[int] | None = None,
                  sampleSize: int | Sequence[int | None] | None = None,
                  samplingStrategy: str | Sequence[str] | None = None, distanceMeasure: str | None = None,
                  init: str | None = None, seed: int | None = None, runPath: str | None = None,
                  outputFormat: str | None = None) -> HierarchicalKMeans:
        """Set the given Params (keyword arguments only); None resets a Param to its default."""
        for name, value in self._input_kwargs.items():  # type: ignore[attr-defined]  # set by @keyword_only
            if value is None:
                self.clear(getattr(self, name))
            else:
                self._set(**{name: value})
        return self

    def setNLevels(self, value: int) -> HierarchicalKMeans:
        """Sets ``nLevels``."""
        return self._set(nLevels=value)

    def setNClusters(self, value: int | Sequence[int]) -> HierarchicalKMeans:
        """Sets ``nClusters`` (one value per level)."""
        return self._set(nClusters=value)

    def setNIters(self, value: int | Sequence[int]) -> HierarchicalKMeans:
        """Sets ``nIters``."""
        return self._set(nIters=value)

    def setNSplits(self, value: int | Sequence[int]) -> HierarchicalKMeans:
        """Sets ``nSplits``."""
        return self._set(nSplits=value)

    def setNResamplingSteps(self, value: int | Sequence[int]) -> HierarchicalKMeans:
        """Sets ``nResamplingSteps``."""
        return self._set(nResamplingSteps=value)

    def setSampleSize(self, value: int | Sequence[int | None] | None) -> HierarchicalKMeans:
        """Sets ``sampleSize`` (None: half the level's mean cluster size)."""
        return self._set(sampleSize=_to_sample_sizes(value))

    def setSamplingStrategy(self, value: str | Sequence[str]) -> HierarchicalKMeans:
        """Sets ``samplingStrategy``."""
        return self._set(samplingStrategy=value)

    def setDistanceMeasure(self, value: str) -> HierarchicalKMeans:
        """Sets ``distanceMeasure``."""
        return self._set(distanceMeasure=value)

    def setInit(self, value: str) -> HierarchicalKMeans:
        """Sets ``init``."""
        return self._set(init=value)

    def setSeed(self, value: int) -> HierarchicalKMeans:
        """Sets ``seed``."""
        return self._set(seed=value)

    def setRunPath(self, value: str | None) -> HierarchicalKMeans:
        """Sets ``runPath`` (None: a temporary folder)."""
        if value is None:
            self.clear(self.runPath)
            return self
        return self._set(runPath=value)

    def setOutputFormat(self, value: str) -> HierarchicalKMeans:
        """Sets ``outputFormat``."""
        return self._set(outputFormat=value)

    def _fit(self, dataset: DataFrame) -> HierarchicalKMeansModel:
        from curation_spark import api

        config = self.toConfig()  # every Param checked before any Spark work
        self._check_input(dataset)
        spark = dataset.sparkSession
        temporary = config.output.path is None
        run_path = temporary_run_folder(spark) if temporary else config.output.path
        try:
            config = config.replace(**{"output.path": run_path})
            run = api.cluster(config, dataset.select(_quoted(self.getIdCol()), _quoted(self.getFeaturesCol())),
                              spark=spark)
        except CurationError as exc:
            raise _translated(exc) from None
        model = HierarchicalKMeansModel()
        self._copyValues(model)
        model._attach(run, owns_run=temporary)
        return model

    def write(self) -> MLWriter:
        """A writer of this Estimator's Params (``write().overwrite().save(path)``)."""
        return _Writer(self)

    @classmethod
    def read(cls) -> MLReader[HierarchicalKMeans]:
        """A reader of a saved :class:`HierarchicalKMeans`."""
        return _EstimatorReader(cls)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LevelSummary:
    """One level of a fitted hierarchy.

    Attributes
    ----------
    level : int
        1 for the clusters of the rows, l > 1 for the clusters of level l - 1's centroids.
    k, requestedK : int
        Clusters the level has (after splits, empty ones dropped) and asked for.
    numPoints : int
        Points the level clustered (rows at level 1, level l - 1's clusters above).
    clusterSizes, flatSizes : tuple of int
        Per cluster, in cluster-id order: its points at this level, and the rows below it.
    objective : float
        The level's final k-means objective (sum of squared distances; of ``1 - cos`` for
        cosine), as the run records it.
    sampleSize : int or None
        The resampling sample size the level used.
    """

    level: int
    k: int
    requestedK: int
    numPoints: int
    clusterSizes: tuple[int, ...]
    flatSizes: tuple[int, ...]
    objective: float
    sampleSize: int | None


@dataclass(frozen=True)
class HierarchicalKMeansSummary:
    """What a fit made, level by level (``model.summary``); ``k``, ``clusterSizes`` and
    ``trainingCost`` are level 1's, as in pyspark's ``KMeansSummary``.

    Examples
    --------
    >>> model.summary.k, sum(model.summary.clusterSizes)
    (12, 2000)
    >>> [lv.k for lv in model.summary.levels]
    [12, 3]
    """

    levels: tuple[LevelSummary, ...]
    #: The distance the hierarchy was built with (``l2`` or ``cosine``: ``auto`` resolved).
    distance: str
    runPath: str

    @property
    def k(self) -> int:
        return self.levels[0].k

    @property
    def clusterSizes(self) -> list[int]:
        return list(self.levels[0].clusterSizes)

    @property
    def trainingCost(self) -> float:
        return self.levels[0].objective


class HierarchicalKMeansModel(_HierarchicalKMeansParams, Model, MLReadable, MLWritable):
    """A fitted hierarchy (:class:`HierarchicalKMeans`), backed by its run folder.

    ``transform`` adds ``predictionCol`` (the level-1 cluster, long) and ``clusterPathCol``
    (the clusters at levels 1..L, array<long>) to every row, keeping all input columns;
    ``idCol`` must be unique (see the module documentation). ``getRunPath()`` is the run
    folder the model reads; :attr:`run` its library handle.

    Examples
    --------
    >>> np.array(model.clusterCenters()).shape  # model: HierarchicalKMeans(...).fit(df)
    (12, 8)
    >>> model.write().overwrite().save("models/hkm")
    >>> HierarchicalKMeansModel.load("models/hkm").transform(df).count()
    2000
    """

    def __init__(self) -> None:
        super().__init__()
        self._run: Run | None = None
        #: Whether the run folder belongs to the model (temporary, or the copy inside a
        #: loaded model's folder): a save copies it rather than referring to it.
        self._owns_run = False
        self._summary: HierarchicalKMeansSummary | None = None

    def _attach(self, run: Run, owns_run: bool) -> None:
        self._run, self._owns_run, self._summary = run, owns_run, None
        self._set(runPath=run.path)

    @property
    def run(self) -> Run:
        """The run folder's handle (:class:`curation_spark.api.Run`): its tables, ``sample``, ``report``."""
        if self._run is None:
            from curation_spark import api

            path = self.getRunPath()
            if path is None:
                raise ConfigError("runPath: this model has no run folder (fit it, or load a saved model)")
            self._run = api.open_run(path)
        return self._run

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        id_col, features = self.getIdCol(), self.getFeaturesCol()
        prediction, path = self.getPredictionCol(), self.getClusterPathCol()
        for name, col in (("predictionCol", prediction), ("clusterPathCol", path)):
            if col in dataset.columns:
                raise ConfigError(f"{name}: output column {col!r} is already a column of the DataFrame")
        if prediction == path:
            raise ConfigError(f"predictionCol and clusterPathCol: both are {path!r}")
        self._check_input(dataset)
        run = self.run
        run_id, run_features = run.config.input.id_col, run.config.input.embedding_col
        placed = "__hkm_cluster_path"
        points = dataset.select(F.col(_quoted(id_col)).alias(run_id), F.col(_quoted(features)).alias(run_features))
        try:
            assigned = run.assign(points)
        except CurationError as exc:
            raise _translated(exc) from None
        assigned = assigned.select(F.col(_quoted(run_id)).alias(id_col), F.col(CLUSTER_PATH).alias(placed))
        joined = dataset.join(assigned, on=id_col, how="left")
        return joined.select(*[F.col(_quoted(c)) for c in dataset.columns],
                             F.col(placed).getItem(0).alias(prediction), F.col(placed).alias(path))

    def clusterCenters(self, level: int = 1) -> list[np.ndarray]:
        """The centroids of ``level`` in cluster-id order (float32, as stored), as
        ``KMeansModel.clusterCenters()``: ``np.array(model.clusterCenters())`` is (K, D).

        Examples
        --------
        >>> [c.shape for c in model.clusterCenters(2)]
        [(8,), (8,), (8,)]
        """
        table = self.run.centroids(level).select("cluster_id", "centroid").orderBy("cluster_id").toArrow()
        values = table.column("centroid").combine_chunks()
        flat = np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        return list(flat.reshape(len(values), -1)) if len(values) else []

    @property
    def hasSummary(self) -> bool:
        """Always true: the summary is read from the run folder (also of a loaded model)."""
        return True

    @property
    def summary(self) -> HierarchicalKMeansSummary:
        """Per-level cluster counts, sizes and objective (:class:`HierarchicalKMeansSummary`)."""
        if self._summary is None:
            run = self.run
            levels = []
            for stats in run.levels:
                rows = (run.centroids(stats.level).select("cluster_id", "size", "flat_size").orderBy("cluster_id")
                        .toArrow())
                levels.append(LevelSummary(
                    level=stats.level, k=stats.n_clusters, requestedK=stats.n_clusters_requested,
                    numPoints=stats.n_points, clusterSizes=tuple(int(v) for v in rows.column("size").to_pylist()),
                    flatSizes=tuple(int(v) for v in rows.column("flat_size").to_pylist()),
                    objective=float(stats.objective), sampleSize=stats.sample_size))
            self._summary = HierarchicalKMeansSummary(tuple(levels), run.distance, run.path)
        return self._summary

    def balancedSample(self, targetSize: int, multiplier: int | None = None, strategy: str | None = None,
                       seed: int | None = None, table: str | None = None) -> DataFrame:
        """Hierarchical balanced sampling of the fit's rows (:meth:`curation_spark.api.Run.sample`):
        ``targetSize`` copies (exactly, while ``multiplier`` x rows allows it) spread evenly
        over the hierarchy's clusters, each row at most ``multiplier`` times. The table is
        written into the run folder and returned: ``id``, ``copy``, ``cluster_id`` (level 1).

        Parameters
        ----------
        targetSize : int
            Rows of the curated set.
        multiplier, strategy, seed : optional
            Max copies of one row; ``r`` (random) or ``c`` (closest to the centroid first)
            inside a level-1 cluster; the seed. Defaults: ``SamplingConfig()``'s.
        table : str, optional
            Name of the table in the run folder (default: one per setting).

        Examples
        --------
        >>> model.balancedSample(500).count()
        500
        """
        try:
            return self.run.sample(targetSize, multiplier=_SAMPLING.multiplier if multiplier is None else multiplier,
                                   strategy=_SAMPLING.strategy if strategy is None else strategy,
                                   seed=_SAMPLING.seed if seed is None else seed, table=table)
        except CurationError as exc:
            raise _translated(exc) from None

    def write(self) -> MLWriter:
        """A writer of this model (``write().overwrite().save(path)``; see the module documentation)."""
        return _Writer(self)

    @classmethod
    def read(cls) -> MLReader[HierarchicalKMeansModel]:
        """A reader of a saved :class:`HierarchicalKMeansModel`."""
        return _ModelReader(cls)  # type: ignore[return-value]  # its load returns the model


def _quoted(name: str) -> str:
    """A column name as ``F.col`` takes it whatever it holds (dots, spaces)."""
    return "`" + name.replace("`", "``") + "`"


# --------------------------------------------------------------------------- run folders


_TEMPORARY_FOLDERS: list[str] = []


def _remove_temporary_folders() -> None:
    for folder in _TEMPORARY_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def temporary_run_folder(spark: SparkSession) -> str:
    """A fresh run folder for a fit without ``runPath``: below ``spark.local.dir`` (its first
    folder), else the system's temporary folder; removed when this Python process exits.
    Only where every executor reads this machine's disk (a local master, also behind a Spark
    Connect server on this machine); elsewhere one :class:`ConfigError` line."""
    where = master(spark)
    if (is_connect(spark) and not server_is_local(spark)) or not where.startswith("local"):
        session = "a Spark Connect server elsewhere" if is_connect(spark) and not server_is_local(spark) \
            else f"master {where or 'unknown'}"
        raise ConfigError(f"runPath: not set, and a temporary folder on this machine is not readable by the "
                          f"executors of this session ({session}); set runPath to a folder they all read "
                          "(s3://..., abfss://..., dbfs:/..., /Volumes/...)")
    base = None
    try:
        local_dirs = spark.conf.get("spark.local.dir", None)
    except Exception:  # a Connect server may hide it; the default folder will do
        local_dirs = None
    if local_dirs:
        first = local_dirs.split(",")[0].strip()
        base = first if os.path.isdir(first) else None
    folder = tempfile.mkdtemp(prefix="curation-spark-hkm-", dir=base)
    if not _TEMPORARY_FOLDERS:
        atexit.register(_remove_temporary_folders)
    _TEMPORARY_FOLDERS.append(folder)
    return "file:" + os.path.join(folder, MODEL_RUN_FOLDER)


def _copy_folder(src: str, dst: str) -> None:
    """Copy a run folder (its files as they are: Delta logs name their files relatively)."""
    import pyarrow.fs as pafs

    src_fs, src_inner = paths.arrow_fs(src)
    dst_fs, dst_inner = paths.arrow_fs(dst)
    dst_fs.create_dir(dst_inner, recursive=True)
    pafs.copy_files(src_inner, dst_inner, source_filesystem=src_fs, destination_filesystem=dst_fs)


# --------------------------------------------------------------------------- persistence


class _Writer(MLWriter):
    """pyspark's ``metadata`` folder (``DefaultParamsWriter``'s format, so a Pipeline loads
    the stage) without the JVM: the overwrite goes through the library's file layer, which
    Spark Connect clients have too. A model also records its run folder (copied into
    ``<path>/run`` when the model owns it)."""

    def __init__(self, instance: Params) -> None:
        super().__init__()
        self.instance = instance

    def save(self, path: str) -> None:
        if not isinstance(path, str):
            raise TypeError(f"path should be a string, got type {type(path).__name__}")
        spark = self.sparkSession
        target = paths.qualify(spark, path, "path")
        model = self.instance if isinstance(self.instance, HierarchicalKMeansModel) else None
        run_path = model.getRunPath() if model is not None else None
        if run_path and paths.is_same_or_inside(run_path, target):
            raise ConfigError(f"path: {paths.display(target)} holds the run folder this model reads "
                              f"({paths.display(run_path)}); save the model elsewhere")
        if paths.exists(spark, target):
            if not self.shouldOverwrite:
                raise ConfigError(f"path: {paths.display(target)} already exists; use write().overwrite().save(path) "
                                  "to replace it")
            paths.delete(spark, target)
        self.saveImpl(target)

    def saveImpl(self, path: str) -> None:
        extra: dict[str, Any] = {}
        params = {p.name: v for p, v in self.instance._paramMap.items()}
        if isinstance(self.instance, HierarchicalKMeansModel):
            model = self.instance
            run_path = model.run.path
            if model._owns_run:
                _copy_folder(run_path, paths.join(path, MODEL_RUN_FOLDER))
                params.pop("runPath", None)
                extra["runFolder"] = {"inModel": True, "path": MODEL_RUN_FOLDER}
            else:
                params["runPath"] = run_path
                extra["runFolder"] = {"inModel": False, "path": run_path}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession, extraMetadata=extra,
                                         paramMap=params)


def _load_params(reader: MLReader, cls: type, path: str) -> tuple[Params, dict[str, Any], str]:
    """The instance of ``cls`` saved at ``path`` (uid, Params), its metadata and the qualified path."""
    spark = reader.sparkSession
    target = paths.qualify(spark, path, "path")
    metadata = DefaultParamsReader.loadMetadata(target, spark, f"{cls.__module__}.{cls.__name__}")
    instance = cls()
    instance._resetUid(metadata["uid"])
    DefaultParamsReader.getAndSetParams(instance, metadata)
    return instance, metadata, target


class _EstimatorReader(MLReader["HierarchicalKMeans"]):
    def __init__(self, cls: type) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> HierarchicalKMeans:
        return _load_params(self, self.cls, path)[0]  # type: ignore[return-value]  # an instance of self.cls


class _ModelReader(_EstimatorReader):
    def load(self, path: str) -> HierarchicalKMeansModel:  # type: ignore[override]  # a model, not an estimator
        from curation_spark import api

        model: HierarchicalKMeansModel
        model, metadata, target = _load_params(self, self.cls, path)  # type: ignore[assignment]  # self.cls is the model class
        folder = metadata.get("runFolder") or {}
        in_model = bool(folder.get("inModel"))
        run_path = paths.join(target, folder["path"]) if in_model else folder.get("path")
        if not run_path:
            raise ConfigError(f"{paths.display(target)}: the saved model names no run folder (runFolder)")
        try:
            run = api.open_run(run_path, spark=self.sparkSession)
        except CurationError as exc:
            raise ConfigError(f"{paths.display(target)}: the model's run folder {paths.display(run_path)} cannot be "
                              f"opened ({_param_names(str(exc))}); a model saved with runPath refers to its run "
                              "folder, it holds no copy") from None
        model._attach(run, owns_run=in_model)
        return model
