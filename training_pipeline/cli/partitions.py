"""`training-pipeline partitions sync|list|remove`: register, list and remove the aid-range
partitions of the project instance. Registered keys that are not usable ranges (see
`core.aid_ranges.read_registered`) are reported on stderr by every command, with the command
that removes them."""

from __future__ import annotations

import argparse
import sys

from training_pipeline.cli.common import (
    confirmed,
    database_resources,
    ensure_dagster_home,
    format_table,
    warn_about_partition_keys,
)


def command_partitions_sync(args: argparse.Namespace) -> int:
    """Register ranges for new aids now (no waiting for a partial range); report stale ones."""
    from dagster import DagsterInstance

    from training_pipeline.defs.automation.partition_sync import sync_partitions
    from training_pipeline.settings import load_settings

    if args.max_videos_per_range is not None:
        if args.max_videos_per_range < 1:
            print("error: --max-videos-per-range must be at least 1", file=sys.stderr)
            return 2
        max_videos = args.max_videos_per_range
    else:
        max_videos = load_settings().max_videos_per_range  # a bad value: exit 2, naming it
    ensure_dagster_home()
    postgres, video_source = database_resources()
    with DagsterInstance.get() as instance:
        report = sync_partitions(
            instance, postgres, video_source, max_videos, check_stale=not args.no_stale_check
        )
    warn_about_partition_keys(report.problems)
    print(
        f"aid ranges: {len(report.registered_before)} registered before, {len(report.new)} new "
        f"(at most {max_videos} videos each)"
    )
    rows = [["new", p.key, f"{p.videos} videos"] for p in report.new]
    rows += [
        ["stale", s.key, "source rows changed since its raw_video_text materialization"]
        for s in report.stale
    ]
    if rows:
        print(format_table(rows))
    if not report.new:
        print("no new aid ranges: every aid is in a registered range")
    if report.unmaterialized is not None:
        print(
            f"{len(report.stale)} stale, {report.unmaterialized} never materialized "
            "(the refresh_changed_ranges schedule rebuilds both)"
        )
    return 0


def command_partitions_list(args: argparse.Namespace) -> int:
    """The registered ranges in aid order, when their raw text was last materialized, counts."""
    from datetime import UTC, datetime

    from dagster import DagsterInstance

    from training_pipeline.defs.automation.partition_sync import (
        latest_materializations,
        registered_ranges,
    )
    from training_pipeline.defs.keys import RAW_VIDEO_TEXT_KEY

    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        registered = registered_ranges(instance)
        materialized = latest_materializations(instance, RAW_VIDEO_TEXT_KEY, registered.keys)
    warn_about_partition_keys(registered.problems())
    ranges = registered.ranges
    if not ranges:
        print("no aid ranges registered (run `training-pipeline partitions sync`)")
        return 0
    counts: dict[str, int] = {}
    if args.counts:
        postgres, video_source = database_resources()
        with postgres.connect() as connection:
            counts = video_source.tables.video_counts(connection, ranges)
    header = ["range", "first aid", "last aid", "raw_video_text materialized"]
    rows = [header + (["videos"] if args.counts else [])]
    for aid_range in ranges:
        record = materialized.get(aid_range.key)
        when = (
            datetime.fromtimestamp(record.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if record
            else "never"
        )
        row = [aid_range.key, str(aid_range.first), str(aid_range.last), when]
        rows.append(row + ([str(counts.get(aid_range.key, 0))] if args.counts else []))
    print(format_table(rows))
    total = f", {sum(counts.values())} videos" if args.counts else ""
    print(f"{len(ranges)} aid ranges{total}")
    return 0


def command_partitions_remove(args: argparse.Namespace) -> int:
    """Remove registered keys: an ignored one (not a range, or overlapping), or a range in use
    with `--in-use`. Asks first on a terminal, needs --yes otherwise."""
    from dagster import DagsterInstance

    from training_pipeline.defs.automation.partition_sync import registered_ranges
    from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME

    ensure_dagster_home()
    keys = list(dict.fromkeys(args.keys))
    with DagsterInstance.get() as instance:
        registered = registered_ranges(instance)
        present = set(instance.get_dynamic_partitions(AID_RANGES_PARTITIONS_NAME))
        unknown = [key for key in keys if key not in present]
        if unknown:
            print(
                f"error: not registered: {', '.join(map(repr, unknown))}; nothing removed",
                file=sys.stderr,
            )
            return 1
        in_use = [key for key in keys if key in set(registered.keys)]
        if in_use and not args.in_use:
            print(
                f"error: {', '.join(in_use)} {'is a range' if len(in_use) == 1 else 'are ranges'} "
                "in use: removing one leaves its aids in no range and its rows in the tables. "
                "Pass --in-use to remove it anyway; nothing removed",
                file=sys.stderr,
            )
            return 2
        refused = confirmed(
            f"remove {len(keys)} aid-range partition key(s) {', '.join(map(repr, keys))}?",
            args.yes,
        )
        if refused is not None:
            return refused
        for key in keys:
            instance.delete_dynamic_partition(AID_RANGES_PARTITIONS_NAME, key)
            print(f"removed {key!r}" + (" (a range in use)" if key in in_use else ""))
        after = registered_ranges(instance)
    warn_about_partition_keys(after.problems())
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """`partitions sync [--max-videos-per-range N] [--no-stale-check]`, `partitions list`,
    `partitions remove KEY... [--yes] [--in-use]`."""
    partitions = commands.add_parser(
        "partitions", help="register, list and remove the aid-range partitions (project instance)"
    )
    partitions_commands = partitions.add_subparsers(dest="partitions_command", required=True)
    sync = partitions_commands.add_parser(
        "sync",
        help="register ranges for aids above the last range now, and report stale ranges",
    )
    sync.add_argument(
        "--max-videos-per-range",
        type=int,
        help="videos per new range (default: $TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE, else 1000)",
    )
    sync.add_argument(
        "--no-stale-check",
        action="store_true",
        help="only register new ranges; do not fingerprint the registered ones",
    )
    sync.set_defaults(handler=command_partitions_sync)
    partitions_list = partitions_commands.add_parser(
        "list", help="registered ranges: first and last aid, last raw text materialization"
    )
    partitions_list.add_argument(
        "--counts", action="store_true", help="also count each range's videos (reads the database)"
    )
    partitions_list.set_defaults(handler=command_partitions_list)
    remove = partitions_commands.add_parser(
        "remove",
        help="remove registered keys that are not usable aid ranges (reported by every command)",
    )
    remove.add_argument("keys", nargs="+", metavar="KEY", help="registered partition keys")
    remove.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    remove.add_argument(
        "--in-use",
        action="store_true",
        help="also remove ranges in use (their aids are then in no range)",
    )
    remove.set_defaults(handler=command_partitions_remove)
