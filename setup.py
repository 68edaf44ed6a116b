"""Packaging for curation-spark: label-free curation of embedding pools on Apache Spark."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = {}
exec((HERE / "curation_spark" / "version.py").read_text(), VERSION)

DOCS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"]

setup(
    name="curation-spark",
    version=VERSION["__version__"],
    description=(
        "Automatic data curation (hierarchical k-means with resampling + balanced "
        "sampling, Vo et al. 2024) for embedding tables on Apache Spark"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The recipes stay in the top-level conf/ (the repository's layout) and ship inside the
    # package as curation_spark/conf/*.yaml (curation_spark.recipes finds them by name).
    packages=[*find_packages(include=["curation_spark", "curation_spark.*"]), "curation_spark.conf"],
    package_dir={"curation_spark.conf": "conf"},
    package_data={"curation_spark": ["py.typed"], "curation_spark.conf": ["*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        # Spark 4.0.x is the Spark of current Databricks runtimes; delta-spark 4.0.x is built for it.
        # [connect]: the Spark Connect client (grpcio, grpcio-status, googleapis-common-protos) for
        # Databricks serverless / standard access mode and SPARK_REMOTE=sc://... servers.
        "pyspark[connect]>=4.0.1,<4.1",
        "delta-spark>=4.0.0,<4.1",
        "faiss-cpu>=1.8,<2",
        "numpy>=1.26,<3",
        "pyarrow>=15",
        # pyspark 4.0's pandas UDF layer is tested against pandas 2.x
        "pandas>=2.2,<3",
        "PyYAML>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        # [mlflow]: tracking.mlflow logs a run's config, figures, run.json and report to MLflow.
        "mlflow": ["mlflow-skinny>=2.10"],
        # [docs]: the documentation site (docs/, mkdocs.yml; `bash scripts/docs.sh`).
        "docs": DOCS,
        "test": ["pytest>=7", "hypothesis>=6", "deltalake>=0.20", "psutil>=5",
                 # MLflow's tests log into a real SQLite tracking store in a temp folder
                 "mlflow-skinny>=2.10", "sqlalchemy>=2", "alembic>=1.8",
                 # the docs site is built with --strict by the suite (tests/test_docs.py)
                 *DOCS,
                 # lint and type checks (pyproject.toml; tests/test_lint.py); the stubs match
                 # install_requires (pandas-stubs 3.x is for pandas 3)
                 "ruff>=0.17,<0.18", "mypy>=2.4,<2.5", "types-PyYAML", "types-tqdm", "pandas-stubs>=2.2,<3"],
    },
    entry_points={"console_scripts": ["curation-spark=curation_spark.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
