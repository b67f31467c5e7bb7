"""`training-pipeline doctor`: one line per check of the database, the source tables and every
model; exit 1 if any failed."""

from __future__ import annotations

import argparse
from pathlib import Path


def command_doctor(args: argparse.Namespace) -> int:
    """One line per check; exit 0 only if none failed."""
    from training_pipeline.cli.doctor_models import run_doctor
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


def register(commands: argparse._SubParsersAction) -> None:
    """`doctor [--config FILE] [--model NAME | --skip-models]`."""
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
