"""`training-pipeline cache import`: the old service's vectors into the embedding cache.

The command around `storage.cache_import`: it finds the model in the TOML (its identity is the
fingerprint the imported rows carry), the table in the code location's database, prints a line
of progress every `PROGRESS_EVERY_SECONDS` on long imports and, at the end, what the run did and,
for a resumed import, what the whole import did. Exit codes: 0 done (or nothing left to do), 1
refused (another configuration of the model is cached, another import is running, the database
went away: a re-run resumes), 2 the arguments do not fit (table, source model, model's size).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

PROGRESS_EVERY_SECONDS = 10.0


def command_cache_import(args: argparse.Namespace) -> int:
    """Import (or `--dry-run`: count) the source model's vectors of the TOML model's size."""
    import psycopg

    from training_pipeline.cli.common import database_resources
    from training_pipeline.core.models_config import default_models_config_path, load_models_config
    from training_pipeline.embedding.clients import model_identity
    from training_pipeline.embedding.progress import format_duration
    from training_pipeline.storage.cache_import import (
        DEFAULT_BATCH_ROWS,
        ImportProgress,
        ImportRefused,
        import_embeddings,
    )
    from training_pipeline.storage.connection import open_connection
    from training_pipeline.storage.legacy_embeddings import LegacyTable, SourceTableError
    from training_pipeline.storage.model_registry import ModelIdentityError

    path = Path(args.config) if args.config else default_models_config_path()
    model = load_models_config(path).get(args.model)
    identity = model_identity(args.model, model)
    postgres, _ = database_resources(path)
    due = time.monotonic() + PROGRESS_EVERY_SECONDS

    def progress(state: ImportProgress) -> None:
        nonlocal due
        if time.monotonic() < due or state.done >= state.total:
            return
        due = time.monotonic() + PROGRESS_EVERY_SECONDS
        rate = state.done / max(state.seconds, 1e-9)
        print(
            f"  {state.done:,}/{state.total:,} rows ({100 * state.done / state.total:.1f}%), "
            f"{rate:,.0f} rows/s, elapsed {format_duration(state.seconds)}, "
            f"ETA {format_duration((state.total - state.done) / rate) if rate else '?'}",
            flush=True,
        )

    try:
        with open_connection(postgres.url(), autocommit=True) as connection:
            source = LegacyTable.inspect(connection, args.from_table)
            print(
                f"{'dry run (nothing is written): ' if args.dry_run else ''}importing "
                f"{source.name} on {postgres.describe()}, source model {args.source_model!r}, "
                f"into model {identity.model!r} ({identity.dimensions}-d, fingerprint "
                f"{identity.fingerprint})",
                flush=True,
            )
            outcome = import_embeddings(
                connection,
                postgres.schema,
                source,
                args.source_model,
                identity,
                dry_run=args.dry_run,
                batch_rows=args.batch_rows or DEFAULT_BATCH_ROWS,
                progress=progress,
            )
    except SourceTableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ModelIdentityError, ImportRefused) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:  # psycopg's messages never hold the password
        print(
            f"error: lost the connection to PostgreSQL at {postgres.describe()} ("
            f"{' '.join(str(error).split())}); every batch stored before is kept and recorded: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    print(describe_outcome(outcome))
    return 0


def describe_outcome(outcome) -> str:
    """The report: this run's counts, and the whole import's when it resumed an earlier one."""
    from training_pipeline.storage.cache_import import finished_before
    from training_pipeline.storage.cache_imports import FINISHED

    dimensions = outcome.key.dimensions
    before = outcome.before
    lines = []
    if before is not None and before.last_id is not None:
        if before.state == FINISHED:
            state = f"finished {utc(before.finished_at or before.updated_at)}"
        else:
            state = f"interrupted {utc(before.updated_at)}"
        lines.append(
            f"this import, started {utc(before.started_at)}, {state} after source id "
            f"{before.last_id:,} ({before.counts.rows:,} rows done): reading only the rows after it"
        )
    if finished_before(outcome):
        lines.append("no row was added to the source since: nothing to import")
    else:
        verb = "would import" if outcome.dry_run else "imported"
        lines.append(
            f"{'dry run, nothing written: ' if outcome.dry_run else ''}"
            f"{outcome.this_run.describe(dimensions, verb)}, of {outcome.this_run.rows:,} rows "
            f"in {outcome.seconds:.1f} s"
        )
    if before is not None and before.last_id is not None:
        whole = "whole import after a real run" if outcome.dry_run else "whole import"
        lines.append(f"{whole}: {outcome.totals.describe(dimensions, 'imported')}")
    return "\n".join(lines)


def utc(moment: datetime) -> str:
    """`2026-12-01 10:00:00 UTC`."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def register(cache_commands: argparse._SubParsersAction) -> None:
    """`cache import --from-table T --source-model NAME --model NAME [--dry-run] ...`."""
    command = cache_commands.add_parser(
        "import",
        help="import the old service's vectors of a model into the embedding cache",
        description=(
            "Copies the valid vectors of one model of the old service's embeddings table into "
            "the cache, as vectors of a model of embedding_models.toml of the same size; "
            "resumable, and a re-run adds nothing. Rejected rows are counted by reason."
        ),
    )
    command.add_argument(
        "--from-table",
        default="internal.embeddings",
        metavar="SCHEMA.TABLE",
        help="the old service's table, in the pipeline's database (default: internal.embeddings)",
    )
    command.add_argument(
        "--source-model", required=True, help="the table's model_name whose rows to import"
    )
    command.add_argument(
        "--model", required=True, help="the model of embedding_models.toml they become"
    )
    command.add_argument(
        "--dry-run", action="store_true", help="read and count only; write nothing"
    )
    command.add_argument("--config", help="models TOML (default: embedding_models.toml)")
    command.add_argument(
        "--batch-rows",
        type=_positive,
        metavar="N",
        help="source rows per batch, each one transaction (default 10,000)",
    )
    command.set_defaults(handler=command_cache_import)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number
