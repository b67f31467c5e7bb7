"""`training-pipeline models`: the configured embedding models (no Dagster, no database), and
`models compare`: the models' evaluations side by side on their shared test rows (the database;
Dagster only to read the code location's database resource)."""

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


def command_models_compare(args: argparse.Namespace) -> int:
    """Every evaluated model's metrics on the test rows they share; exit 1 if none is evaluated."""
    from training_pipeline.cli.models_compare import compare_models

    return compare_models(args.compare_config or args.config, args.names)


def register(commands: argparse._SubParsersAction) -> None:
    """`models [--config FILE]`, `models compare [--config FILE] [MODEL ...]`."""
    models = commands.add_parser("models", help="list the configured embedding models")
    models.add_argument("--config", help="models TOML (default: embedding_models.toml)")
    models.set_defaults(handler=command_models)
    actions = models.add_subparsers(dest="models_command", metavar="{compare}")
    compare = actions.add_parser(
        "compare",
        help="the models' latest evaluations side by side, on the test rows they share",
        description=(
            "Prints the latest evaluation__<model> metrics of every evaluated model (or of the "
            "named ones) recomputed on the test rows all of them share, with the baseline."
        ),
    )
    compare.add_argument("names", nargs="*", metavar="MODEL", help="only these models")
    compare.add_argument(
        "--config",
        dest="compare_config",
        metavar="FILE",
        help="models TOML (default: embedding_models.toml)",
    )
    compare.set_defaults(handler=command_models_compare)
