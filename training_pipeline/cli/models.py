"""`training-pipeline models`: the configured embedding models (no Dagster, no database)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from training_pipeline.cli.common import format_table


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


def register(commands: argparse._SubParsersAction) -> None:
    """`models [--config FILE]`."""
    models = commands.add_parser("models", help="list the configured embedding models")
    models.add_argument("--config", help="models TOML (default: embedding_models.toml)")
    models.set_defaults(handler=command_models)
