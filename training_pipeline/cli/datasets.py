"""`training-pipeline datasets list|show|export|delete`: the snapshot folder only, never the
database or the embedding cache (and no Dagster)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training_pipeline.cli.common import confirmed, format_table, human_size


def _dataset_store(args: argparse.Namespace):
    from training_pipeline.settings import load_settings
    from training_pipeline.storage.snapshot_files import DatasetStore

    return DatasetStore(
        Path(args.datasets_dir) if args.datasets_dir else load_settings().datasets_dir
    )


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
    refused = confirmed(
        f"delete {len(ids)} snapshot(s) {', '.join(ids)} from {store.base_dir}?", args.yes
    )
    if refused is not None:
        return refused
    for dataset_id in ids:
        files = store.delete(dataset_id)
        print(f"deleted {dataset_id}: {files.parquet.name}, {files.sidecar.name}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """`datasets [--datasets-dir DIR] list|show|export|delete`."""
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
