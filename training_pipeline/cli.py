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


def command_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI on this machine only (127.0.0.1 unless --host says otherwise)."""
    _ensure_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    workspace = project_root() / "workspace.yaml"
    argv = [
        str(dagster),
        "dev",
        "-w",
        str(workspace),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    os.chdir(project_root())
    os.execv(argv[0], argv)
    return 0  # not reached


def command_demo(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from training_pipeline.definitions import build_definitions
    from training_pipeline.demo.run_demo import format_summary, run_demo

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
    from training_pipeline.models_config import default_models_config_path, load_models_config

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
    from training_pipeline.doctor import run_doctor
    from training_pipeline.models_config import (
        ModelsConfigError,
        default_models_config_path,
    )
    from training_pipeline.resources.database import PostgresResource
    from training_pipeline.resources.embedding_models import EmbeddingModelsResource
    from training_pipeline.resources.sources import VideoSourceResource

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
    from training_pipeline.datasets import DatasetStore
    from training_pipeline.settings import datasets_dir

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
    copied = _dataset_store(args).export(args.dataset_id, Path(args.destination), force=args.force)
    print(f"exported {args.dataset_id}: {copied.parquet} and {copied.sidecar}")
    return 0


def command_datasets_delete(args: argparse.Namespace) -> int:
    """Delete snapshot files; asks first on a terminal, needs --yes otherwise."""
    from training_pipeline.datasets import DatasetNotFoundError, validate_dataset_id

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
    export.set_defaults(handler=command_datasets_export)

    delete = datasets_commands.add_parser(
        "delete",
        parents=[common],
        help="delete snapshot files (never the database or the embedding cache)",
    )
    delete.add_argument("dataset_ids", nargs="+", metavar="dataset_id")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=command_datasets_delete)
    return parser


def _exit_code(error: Exception) -> int | None:
    """Exit code of an error the user can fix (its message says how), None for a bug."""
    from training_pipeline.datasets import (
        DatasetExportError,
        DatasetIdError,
        DatasetNotFoundError,
    )
    from training_pipeline.models_config import ModelsConfigError

    codes: list[tuple[type[Exception], int]] = [
        (DatasetIdError, 2),
        (ModelsConfigError, 2),
        (DatasetNotFoundError, 1),
        (DatasetExportError, 1),
    ]
    # Only loaded (and only raised) by commands that use the database; importing it costs Dagster.
    database = sys.modules.get("training_pipeline.resources.database")
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


if __name__ == "__main__":
    sys.exit(main())
