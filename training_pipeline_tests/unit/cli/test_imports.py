"""Commands that need no Dagster start without importing it (a fresh interpreter each)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from training_pipeline.cli import main
code = main(sys.argv[1:])
assert code == 0, code
print("dagster imported" if "dagster" in sys.modules else "no dagster")
"""


@pytest.mark.parametrize(
    "args", [["models"], ["datasets", "list"], ["db", "stop"], ["--help"]], ids=" ".join
)
def test_commands_without_dagster_do_not_import_it(args, tmp_path):
    env = {**os.environ, "TRAINING_PIPELINE_PGDATA": str(tmp_path / "none")}
    if args == ["--help"]:
        probe = PROBE.replace(
            "code = main(sys.argv[1:])",
            "from training_pipeline.cli import build_parser\nbuild_parser()\ncode = 0",
        )
    else:
        probe = PROBE
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no dagster"
