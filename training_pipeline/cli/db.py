"""`training-pipeline db stop`: stop the embedded PostgreSQL, which otherwise keeps running."""

from __future__ import annotations

import argparse
import os


def command_db_stop(args: argparse.Namespace) -> int:
    """Stop the embedded server of `$TRAINING_PIPELINE_PGDATA` (default `.pgdata/`)."""
    from training_pipeline.settings import load_settings
    from training_pipeline.storage.connection import DEFAULT_URL_ENV_VAR, stop_embedded_server

    data_dir = load_settings().pgdata
    stopped = stop_embedded_server(data_dir)
    print(f"embedded PostgreSQL ({data_dir}): {'stopped' if stopped else 'not running'}")
    if os.environ.get(DEFAULT_URL_ENV_VAR):
        print(f"(${DEFAULT_URL_ENV_VAR} is set: the pipeline uses that server, not this one)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """`db stop`."""
    db = commands.add_parser("db", help="the embedded PostgreSQL (data in .pgdata/)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    stop = db_commands.add_parser(
        "stop", help="stop the embedded PostgreSQL (it keeps running until then)"
    )
    stop.set_defaults(handler=command_db_stop)
