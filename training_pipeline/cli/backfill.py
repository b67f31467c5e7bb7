"""`training-pipeline backfill`: queue one backfill per group of aid ranges for the daemon."""

from __future__ import annotations

import argparse
import sys

from training_pipeline.cli.common import (
    ensure_dagster_home,
    format_table,
    warn_about_partition_keys,
)


def command_backfill(args: argparse.Namespace) -> int:
    """Queue one backfill per group of ranges for the daemon (one run per group)."""
    from dagster import DagsterInstance

    from training_pipeline.definitions import build_definitions
    from training_pipeline.defs.backfills import queue_backfills, registered_ranges, select_ranges

    ensure_dagster_home()
    defs = build_definitions()
    models = defs.resources["embedding_models"].config()
    model_name = args.model or models.default_model
    models.get(model_name)
    with DagsterInstance.get() as instance:
        registered = registered_ranges(instance)
        warn_about_partition_keys(registered.problems())
        try:
            keys = select_ranges(registered.keys, args.first, args.last)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        queued = queue_backfills(instance, defs, model_name, keys, args.ranges_per_run)
    print(
        f"queued {len(queued)} backfills ({len(keys)} aid ranges, at most {args.ranges_per_run} "
        f"per run) of {model_name}: the daemon launches them (make dev, or dagster-daemon run)"
    )
    print(format_table([[b.backfill_id, f"{b.keys[0]} ... {b.keys[-1]}", f"{len(b.keys)} ranges"]
                        for b in queued]))  # fmt: skip
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """`backfill [--model NAME] [--from KEY] [--to KEY] [--ranges-per-run N]`."""
    backfill = commands.add_parser(
        "backfill", help="queue a backfill over aid ranges for the daemon, one run per group"
    )
    backfill.add_argument("--model", help="embedding model (default: default_model of the TOML)")
    backfill.add_argument("--from", dest="first", help="first aid range (default: the first)")
    backfill.add_argument("--to", dest="last", help="last aid range (default: the last)")
    backfill.add_argument(
        "--ranges-per-run", type=int, default=10, help="aid ranges per run (default 10)"
    )
    backfill.set_defaults(handler=command_backfill)
