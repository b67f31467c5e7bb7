"""What every test needs: no test sees the developer's own database, models file or datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the developer's own database, models file and datasets."""
    for name in list(os.environ):
        if name == "DATABASE_URL" or name.upper().startswith("TRAINING_PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRAINING_PIPELINE_DATASETS_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("TRAINING_PIPELINE_PGDATA", str(tmp_path / "unused-pgdata"))
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
