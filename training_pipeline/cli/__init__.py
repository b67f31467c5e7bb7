"""The `training-pipeline` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training_pipeline.settings import project_root

DEV_INSTANCE_YAML = """\
# Project-local Dagster instance for `make demo` and `make dev` (SQLite storage).
# Production settings live in deploy/dagster.yaml.
telemetry:
  enabled: false
"""


def _ensure_dagster_home() -> Path:
    """Use `$DAGSTER_HOME`, else the project-local `.dagster_home/`, with a dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(DEV_INSTANCE_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def dev_argv(host: str, port: int) -> list[str]:
    """The `dagster dev` command line: webserver and daemon on `host` (loopback by default)."""
    dagster = Path(sys.executable).with_name("dagster")
    workspace = project_root() / "workspace.yaml"
    return [str(dagster), "dev", "-w", str(workspace), "--host", host, "--port", str(port)]


def command_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI on this machine only (127.0.0.1 unless --host says otherwise)."""
    _ensure_dagster_home()
    argv = dev_argv(args.host, args.port)
    os.chdir(project_root())
    os.execv(argv[0], argv)
    return 0  # not reached


def _import_demo():
    """The demo, which lives in the checkout next to the package and is not installed."""
    import importlib

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "training_pipeline_demo" / "__init__.py").exists():
        raise DemoNotFoundError(
            f"the demo is not installed with the package: run it from a checkout of the "
            f"repository (no training_pipeline_demo/ next to {checkout / 'training_pipeline'})"
        )
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return importlib.import_module("training_pipeline_demo.run_demo")


class DemoNotFoundError(RuntimeError):
    """`training-pipeline demo` outside a checkout of the repository."""


def command_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from training_pipeline.definitions import build_definitions

    run_demo_module = _import_demo()
    format_summary, run_demo = run_demo_module.format_summary, run_demo_module.run_demo
    _ensure_dagster_home()
    defs = build_definitions()
    models = defs.resources["embedding_models"].config()
    model_name = args.model or models.default_model
    models.get(model_name)  # an unknown model fails here, listing the configured ones
    with DagsterInstance.get() as instance:
        summary = run_demo(
            defs,
            instance,
            model_name=model_name,
            max_videos_per_range=args.max_videos_per_range,
            n_videos=args.videos,
        )
    print(format_summary(summary, model_name))
    return 0


def command_models(args: argparse.Namespace) -> int:
    """A table of the configured models; API keys are reported as set or not, never shown."""
    from training_pipeline.core.models_config import default_models_config_path, load_models_config

    path = Path(args.config) if args.config else default_models_config_path()
    config = load_models_config(path)
    rows = [["name", "default", "type", "dimensions", "endpoint", "api key"]]
    for name, model in config.models.items():
        if model.api_key_env:
            state = "set" if os.environ.get(model.api_key_env) else "NOT SET"
            api_key = f"{model.api_key_env} ({state})"
        else:
            api_key = "-"
        rows.append(
            [
                name,
                "*" if name == config.default_model else "",
                model.type,
                str(model.dimensions),
                public_endpoint(model.endpoint) if model.endpoint else "in-process",
                api_key,
            ]
        )
    print(f"models file: {path}")
    print(format_table(rows))
    return 0


def public_endpoint(url: str) -> str:
    """An endpoint URL without user info or query string (where credentials could hide)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def format_table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # not reached


def command_doctor(args: argparse.Namespace) -> int:
    """One line per check; exit 0 only if none failed."""
    from training_pipeline.cli.doctor_checks import run_doctor
    from training_pipeline.core.models_config import (
        ModelsConfigError,
        default_models_config_path,
    )
    from training_pipeline.defs.resources import (
        EmbeddingModelsResource,
        PostgresResource,
        VideoSourceResource,
    )

    path = Path(args.config) if args.config else default_models_config_path()
    try:
        # The resources the code location runs with (its resource config included).
        from training_pipeline.definitions import build_definitions

        resources = build_definitions(path).resources
        postgres, video_source = resources["postgres"], resources["video_source"]
        models = resources["embedding_models"]
    except ModelsConfigError:
        # The models file is broken; the doctor still checks the database (with the default
        # resources) and reports the file's error as a failed check.
        postgres, video_source = PostgresResource(), VideoSourceResource()
        models = EmbeddingModelsResource(config_path=str(path))
    failed = total = 0
    for outcome in run_doctor(
        postgres, video_source, models, model=args.model, skip_models=args.skip_models
    ):
        print(outcome.line(), flush=True)
        total += 1
        failed += outcome.failed
    if failed:
        print(f"doctor: {failed} of {total} checks FAILED")
        return 1
    print(f"doctor: all {total} checks ok")
    return 0


def _dataset_store(args: argparse.Namespace):
    from training_pipeline.settings import datasets_dir
    from training_pipeline.storage.snapshot_files import DatasetStore

    return DatasetStore(Path(args.datasets_dir) if args.datasets_dir else datasets_dir())


def command_datasets_list(args: argparse.Namespace) -> int:
    """Complete snapshots, oldest first (newest last)."""
    store = _dataset_store(args)
    sidecars = list(store.list())
    if not sidecars:
        print(f"no dataset snapshots in {store.base_dir}")
        return 0
    rows = [["id", "model", "rows", "created_at", "size"]]
    for sidecar in sidecars:
        stats: dict[str, Any] = sidecar.get("stats") or {}
        rows.append(
            [
                str(sidecar["dataset_id"]),
                str(sidecar.get("embedding_model") or stats.get("embedding_model") or "?"),
                str(sidecar.get("total_records", stats.get("total_records", "?"))),
                str(sidecar.get("created_at", "?")),
                human_size(sidecar.get("file_size_bytes")),
            ]
        )
    print(format_table(rows))
    print(f"{len(sidecars)} snapshots in {store.base_dir}")
    return 0


def command_datasets_show(args: argparse.Namespace) -> int:
    sidecar = _dataset_store(args).read_metadata(args.dataset_id)
    print(json.dumps(sidecar, ensure_ascii=False, indent=2, sort_keys=True))
    return 0


def command_datasets_export(args: argparse.Namespace) -> int:
    copied = _dataset_store(args).export(
        args.dataset_id, Path(args.destination), force=args.force, split=args.split
    )
    if args.split is None:
        print(f"exported {args.dataset_id}: {copied.parquet} and {copied.sidecar}")
    else:
        sidecar = json.loads(copied.sidecar.read_text(encoding="utf-8"))
        print(
            f"exported the {args.split} split of {args.dataset_id} "
            f"({sidecar['total_records']} rows): {copied.parquet} and {copied.sidecar}"
        )
    return 0


def command_datasets_delete(args: argparse.Namespace) -> int:
    """Delete snapshot files; asks first on a terminal, needs --yes otherwise."""
    from training_pipeline.storage.snapshot_files import DatasetNotFoundError, validate_dataset_id

    store = _dataset_store(args)
    ids = [validate_dataset_id(dataset_id) for dataset_id in args.dataset_ids]
    unknown = [dataset_id for dataset_id in ids if not store.exists(dataset_id)]
    if unknown:
        raise DatasetNotFoundError(
            f"no dataset snapshot {', '.join(map(repr, unknown))} in {store.base_dir}; "
            "nothing deleted"
        )
    if not args.yes:
        if not sys.stdin.isatty():
            print(
                "error: not deleting without confirmation: pass --yes (stdin is not a terminal)",
                file=sys.stderr,
            )
            return 2
        answer = input(
            f"delete {len(ids)} snapshot(s) {', '.join(ids)} from {store.base_dir}? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing deleted")
            return 1
    for dataset_id in ids:
        files = store.delete(dataset_id)
        print(f"deleted {dataset_id}: {files.parquet.name}, {files.sidecar.name}")
    return 0


def _partition_resources():
    """The instance's aid ranges are read with the code location's database resources."""
    from training_pipeline.definitions import build_definitions

    resources = build_definitions().resources
    return resources["postgres"], resources["video_source"]


def command_partitions_sync(args: argparse.Namespace) -> int:
    """Register ranges for new aids now (no waiting for a partial range); report stale ones."""
    from dagster import DagsterInstance

    from training_pipeline.defs.automation.partition_sync import (
        max_videos_per_range_from_env,
        sync_partitions,
    )

    if args.max_videos_per_range is not None:
        if args.max_videos_per_range < 1:
            print("error: --max-videos-per-range must be at least 1", file=sys.stderr)
            return 2
        max_videos = args.max_videos_per_range
    else:
        try:
            max_videos = max_videos_per_range_from_env()
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    _ensure_dagster_home()
    postgres, video_source = _partition_resources()
    with DagsterInstance.get() as instance:
        report = sync_partitions(
            instance, postgres, video_source, max_videos, check_stale=not args.no_stale_check
        )
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

    _ensure_dagster_home()
    with DagsterInstance.get() as instance:
        ranges = registered_ranges(instance)
        materialized = latest_materializations(instance, RAW_VIDEO_TEXT_KEY)
    if not ranges:
        print("no aid ranges registered (run `training-pipeline partitions sync`)")
        return 0
    counts: dict[str, int] = {}
    if args.counts:
        postgres, video_source = _partition_resources()
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


def command_backfill(args: argparse.Namespace) -> int:
    """Queue one backfill per group of ranges for the daemon (one run per group)."""
    from dagster import DagsterInstance

    from training_pipeline.definitions import build_definitions
    from training_pipeline.defs.backfills import queue_backfills, registered_ranges, select_ranges

    _ensure_dagster_home()
    defs = build_definitions()
    models = defs.resources["embedding_models"].config()
    model_name = args.model or models.default_model
    models.get(model_name)
    with DagsterInstance.get() as instance:
        try:
            keys = select_ranges(registered_ranges(instance), args.first, args.last)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="training-pipeline",
        description="Video metadata and labels in PostgreSQL -> embedded training datasets.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="seed sample data, materialize every asset of every range, write a dataset"
    )
    demo.add_argument("--model", help="embedding model (default: default_model of the TOML)")
    demo.add_argument("--max-videos-per-range", type=int, default=1000)
    demo.add_argument("--videos", type=int, default=3600, help="sample videos to generate")
    demo.set_defaults(handler=command_demo)

    dev = commands.add_parser("dev", help="open the Dagster UI (project-local DAGSTER_HOME)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=command_dev)

    models = commands.add_parser("models", help="list the configured embedding models")
    models.add_argument("--config", help="models TOML (default: embedding_models.toml)")
    models.set_defaults(handler=command_models)

    doctor = commands.add_parser(
        "doctor",
        help="check the database, pgvector, schema, source tables and every model; exit 1 on "
        "any failure",
    )
    doctor.add_argument("--config", help="models TOML (default: embedding_models.toml)")
    doctor_models = doctor.add_mutually_exclusive_group()
    doctor_models.add_argument("--model", help="check only this model")
    doctor_models.add_argument(
        "--skip-models", action="store_true", help="do not call the embedding models"
    )
    doctor.set_defaults(handler=command_doctor)

    datasets_dir_help = "snapshot folder (default: $TRAINING_PIPELINE_DATASETS_DIR, else datasets/)"
    datasets = commands.add_parser("datasets", help="list, show, export or delete snapshots")
    datasets.add_argument("--datasets-dir", help=datasets_dir_help)
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    # --datasets-dir is accepted before or after the sub-command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--datasets-dir", default=argparse.SUPPRESS, help=datasets_dir_help)

    listing = datasets_commands.add_parser(
        "list", parents=[common], help="snapshots, oldest first (newest last)"
    )
    listing.set_defaults(handler=command_datasets_list)

    show = datasets_commands.add_parser(
        "show", parents=[common], help="print a snapshot's sidecar (JSON)"
    )
    show.add_argument("dataset_id")
    show.set_defaults(handler=command_datasets_show)

    export = datasets_commands.add_parser(
        "export",
        parents=[common],
        help="copy a snapshot's Parquet file and sidecar to a folder or to a path ending in "
        ".parquet",
    )
    export.add_argument("dataset_id")
    export.add_argument("destination")
    export.add_argument("--force", action="store_true", help="replace existing files")
    export.add_argument(
        "--split",
        choices=["train", "validation", "test"],
        help="export only this split's rows (a file per split, for trainers that split at random)",
    )
    export.set_defaults(handler=command_datasets_export)

    delete = datasets_commands.add_parser(
        "delete",
        parents=[common],
        help="delete snapshot files (never the database or the embedding cache)",
    )
    delete.add_argument("dataset_ids", nargs="+", metavar="dataset_id")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=command_datasets_delete)

    partitions = commands.add_parser(
        "partitions", help="register and list the aid-range partitions (project instance)"
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
    return parser


def _exit_code(error: Exception) -> int | None:
    """Exit code of an error the user can fix (its message says how), None for a bug."""
    from training_pipeline.core.models_config import ModelsConfigError
    from training_pipeline.storage.snapshot_files import (
        DatasetExportError,
        DatasetIdError,
        DatasetNotFoundError,
    )

    codes: list[tuple[type[Exception], int]] = [
        (DatasetIdError, 2),
        (ModelsConfigError, 2),
        (DatasetNotFoundError, 1),
        (DatasetExportError, 1),
        (DemoNotFoundError, 2),
    ]
    # Only loaded (and only raised) by commands that use the database; importing it costs Dagster.
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
