"""What the commands share: the project-local Dagster instance, the code location's resources,
and plain-text tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from training_pipeline.settings import project_root

DEV_INSTANCE_YAML = """\
# Project-local Dagster instance for `make demo` and `make dev` (SQLite storage).
# Production settings live in deploy/dagster.yaml.
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """Use `$DAGSTER_HOME`, else the project-local `.dagster_home/`, with a dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_root() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not instance_yaml.exists():
        instance_yaml.write_text(DEV_INSTANCE_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def database_resources(models_config_path: Path | None = None):
    """The code location's `postgres` and `video_source` resources (its resource config
    included, for that models file, else the default one): commands read the aid ranges and
    the cache the way the runs do."""
    from training_pipeline.definitions import build_definitions

    resources = build_definitions(models_config_path).resources
    return resources["postgres"], resources["video_source"]


def confirmed(question: str, assume_yes: bool) -> int | None:
    """None to go ahead (`--yes`, or "y" typed on a terminal), else the command's exit code: 2
    without a terminal to ask on (pass --yes), 1 when the answer is not yes."""
    if assume_yes:
        return None
    if not sys.stdin.isatty():
        print(
            "error: not deleting without confirmation: pass --yes (stdin is not a terminal)",
            file=sys.stderr,
        )
        return 2
    if input(f"{question} [y/N] ").strip().lower() not in {"y", "yes"}:
        print("nothing deleted")
        return 1
    return None


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


def warn_about_partition_keys(problems: str | None) -> None:
    """Print the registered keys that are ignored (see `core.aid_ranges`) and how to fix them."""
    if problems:
        print(f"warning: {problems}", file=sys.stderr)
