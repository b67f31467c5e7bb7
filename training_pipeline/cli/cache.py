"""`training-pipeline cache drop MODEL [--yes]`: delete one model's cached vectors (and
`cache import`, in `cli.cache_import`: the old service's vectors into the cache).

The way out when a model's configuration changed under the same name (the runs refuse the old
vectors, naming the changed fields) and the old vectors are not wanted: after the drop, the
next run of `embedding_cache__<model>` embeds what it needs with the model as configured now.
Rows go in batches of committed transactions, so a large cache never holds one long lock; an
interrupted drop leaves the model marked `dropping` (no run uses it) until it is run again.
"""

from __future__ import annotations

import argparse

from training_pipeline.cli import cache_import
from training_pipeline.cli.common import confirmed

PROGRESS_EVERY_ROWS = 100_000


def command_cache_drop(args: argparse.Namespace) -> int:
    """Delete every cached vector of a model (all its dimensions) and its registry entries."""
    from psycopg import sql

    from training_pipeline.cli.common import database_resources
    from training_pipeline.core.models_config import ModelsConfigError, is_model_name
    from training_pipeline.storage.cache_imports import forget_imports
    from training_pipeline.storage.connection import open_connection, table_exists
    from training_pipeline.storage.embedding_cache import CACHE_TABLE, ensure_cache_tables
    from training_pipeline.storage.model_registry import count_model_rows, drop_model_cache

    model = args.model
    if not is_model_name(model):
        raise ModelsConfigError(
            f"model name {model!r} must be 1-64 letters, digits, '.', '_' or '-'"
        )
    postgres, _ = database_resources()
    schema = postgres.schema
    where = f"{schema}.{CACHE_TABLE} on {postgres.describe()}"
    with open_connection(postgres.url(), autocommit=True) as connection:
        if not table_exists(connection, sql.Identifier(schema, CACHE_TABLE)):
            print(f"no embedding cache table {where}; nothing to drop")
            return 1
        ensure_cache_tables(connection, schema)  # a table from before fingerprints: migrated
        rows, entries = count_model_rows(connection, schema, CACHE_TABLE, model)
        if rows == 0 and not entries:
            print(f"no cached vectors of model {model!r} in {where}; nothing to drop")
            return 1
        sizes = (
            ", ".join(sorted({f"{dimensions}-d" for dimensions, _ in entries})) or "unregistered"
        )
        refused = confirmed(
            f"delete {rows:,} cached vectors of model {model!r} ({sizes}) from {where}? "
            "Runs then embed them again, through the model's API",
            args.yes,
        )
        if refused is not None:
            return refused
        reported = 0

        def progress(deleted: int) -> None:
            nonlocal reported
            if deleted - reported >= PROGRESS_EVERY_ROWS:
                print(f"  {deleted:,} of {rows:,} deleted", flush=True)
                reported = deleted

        counts = drop_model_cache(connection, schema, CACHE_TABLE, model, progress)
        # The imports' progress went with the vectors: a new import starts from the first row.
        imports = forget_imports(connection, schema, model)
    entries = (
        f"{counts.registry_entries} registry entr{'y' if counts.registry_entries == 1 else 'ies'}"
    )
    print(
        f"deleted {counts.rows:,} cached vectors of model {model!r}, {entries} and {imports} "
        f"import record{'' if imports == 1 else 's'} from {where}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """`cache drop MODEL [--yes]`, `cache import ...` (see `cli.cache_import`)."""
    cache = commands.add_parser("cache", help="the embedding cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    drop = cache_commands.add_parser(
        "drop",
        help="delete a model's cached vectors (all its dimensions) and its registry entry",
    )
    drop.add_argument("model", help="the model's name (as in embedding_models.toml)")
    drop.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    drop.set_defaults(handler=command_cache_drop)
    cache_import.register(cache_commands)
