"""The `training-pipeline` command."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

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
    from training_pipeline.models_config import load_models_config

    config = load_models_config(args.config)
    for name, model in config.models.items():
        default = " (default)" if name == config.default_model else ""
        where = model.endpoint or "in-process"
        print(f"{name}{default}: {model.type}, {model.dimensions}-d, {where}")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # pgserver asks platformdirs for a runtime dir at import; servers without a login session
    # have none, and the fallback it picks is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    from training_pipeline.datasets import DatasetIdError
    from training_pipeline.models_config import ModelsConfigError
    from training_pipeline.resources.database import DatabaseError

    try:
        return args.handler(args)
    except (ModelsConfigError, DatabaseError, DatasetIdError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
