"""The `training-pipeline` command: one module per command group, imported without Dagster."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from training_pipeline.cli import (
    backfill,
    cache,
    datasets,
    db,
    demo,
    dev,
    doctor,
    models,
    partitions,
)

COMMAND_GROUPS = (demo, dev, db, models, doctor, datasets, cache, partitions, backfill)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="training-pipeline",
        description="Video metadata and labels in PostgreSQL -> embedded training datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def _exit_code(error: Exception) -> int | None:
    """Exit code of an error the user can fix (its message says how), None for a bug."""
    from training_pipeline.core.models_config import ModelsConfigError
    from training_pipeline.settings import SettingsError
    from training_pipeline.storage.snapshot_files import (
        DatasetExportError,
        DatasetIdError,
        DatasetNotFoundError,
    )

    codes: list[tuple[type[Exception], int]] = [
        (DatasetIdError, 2),
        (ModelsConfigError, 2),
        (SettingsError, 2),
        (DatasetNotFoundError, 1),
        (DatasetExportError, 1),
        (demo.DemoNotFoundError, 2),
    ]
    # Only loaded (and only raised) by commands that use the database; it imports psycopg and numpy.
    database = sys.modules.get("training_pipeline.storage.connection")
    if database is not None:
        codes.append((database.DatabaseError, 2))
    for error_type, code in codes:
        if isinstance(error, error_type):
            return code
    return None


def main(argv: Sequence[str] | None = None) -> int:
    # pgserver asks platformdirs for a runtime dir at import; servers without a login session
    # have none, and the fallback it picks is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return code
