"""Where the project keeps its local state, overridable by environment variables.

Everything a developer machine accumulates (embedded database, Dagster instance, dataset files)
lives in git-ignored folders of the project so that a clone is self-contained and `rm -rf` of
those folders is a full reset.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """`$TRAINING_PIPELINE_HOME`, else the checkout that holds this package."""
    override = os.environ.get("TRAINING_PIPELINE_HOME")
    return Path(override).resolve() if override else Path(__file__).resolve().parents[1]


def embedded_pgdata_dir() -> Path:
    """Data folder of the embedded PostgreSQL (`$TRAINING_PIPELINE_PGDATA`, else `.pgdata/`)."""
    override = os.environ.get("TRAINING_PIPELINE_PGDATA")
    return Path(override).resolve() if override else project_root() / ".pgdata"


def datasets_dir() -> Path:
    """Folder of dataset snapshots (`$TRAINING_PIPELINE_DATASETS_DIR`, else `datasets/`)."""
    override = os.environ.get("TRAINING_PIPELINE_DATASETS_DIR")
    return Path(override).resolve() if override else project_root() / "datasets"
