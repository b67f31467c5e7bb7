"""`training-pipeline demo`: sample data, every asset of every range, one dataset snapshot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training_pipeline.cli.common import ensure_dagster_home


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
    ensure_dagster_home()
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


def register(commands: argparse._SubParsersAction) -> None:
    """`demo [--model NAME] [--videos N] [--max-videos-per-range N]`."""
    demo = commands.add_parser(
        "demo", help="seed sample data, materialize every asset of every range, write a dataset"
    )
    demo.add_argument("--model", help="embedding model (default: default_model of the TOML)")
    demo.add_argument("--max-videos-per-range", type=int, default=1000)
    demo.add_argument("--videos", type=int, default=3600, help="sample videos to generate")
    demo.set_defaults(handler=command_demo)
