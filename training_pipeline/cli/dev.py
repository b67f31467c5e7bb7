"""`training-pipeline dev`: the Dagster UI and daemon with the project-local instance."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training_pipeline.cli.common import ensure_dagster_home
from training_pipeline.settings import project_root


def dev_argv(host: str, port: int) -> list[str]:
    """The `dagster dev` command line: webserver and daemon on `host` (loopback by default)."""
    dagster = Path(sys.executable).with_name("dagster")
    workspace = project_root() / "workspace.yaml"
    return [str(dagster), "dev", "-w", str(workspace), "--host", host, "--port", str(port)]


def command_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI on this machine only (127.0.0.1 unless --host says otherwise)."""
    ensure_dagster_home()
    argv = dev_argv(args.host, args.port)
    os.chdir(project_root())
    os.execv(argv[0], argv)
    return 0  # not reached


def register(commands: argparse._SubParsersAction) -> None:
    """`dev [--host H] [--port P]`."""
    dev = commands.add_parser("dev", help="open the Dagster UI (project-local DAGSTER_HOME)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=command_dev)
