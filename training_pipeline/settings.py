"""Every `TRAINING_PIPELINE_*` environment variable, as one settings object validated at once.

`load_settings()` reads the current environment (tests change it, so nothing is read at import)
and validates every variable; a bad value raises `SettingsError` naming the variable, its value
and what is expected, e.g. `TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE='abc': expected a whole
number, at least 1`. An unset or blank variable takes its default. The code location validates
them when it loads, so a typo fails the load rather than a sensor tick hours later.

Local state (embedded database, dataset files) lives in git-ignored folders of the project by
default, so a clone is self-contained and removing those folders is a full reset.
"""

from __future__ import annotations

import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from training_pipeline.core.aid_ranges import DEFAULT_MAX_VIDEOS_PER_RANGE

ENV_PREFIX = "TRAINING_PIPELINE_"
CHECKOUT = Path(__file__).resolve().parents[1]
"""The checkout (or site-packages) folder that holds this package."""
DEFAULT_REFRESH_CRON = "0 3 * * *"
DEFAULT_REFRESH_TIMEZONE = "UTC"


class SettingsError(ValueError):
    """One or more `TRAINING_PIPELINE_*` variables have unusable values (one line each)."""


def env_var(field: str) -> str:
    """The environment variable of a settings field (`max_videos_per_range` ->
    `TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE`)."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """The pipeline's settings; each field is the variable `TRAINING_PIPELINE_<FIELD>`."""

    # Defaults are final values (the folders are filled in from `home` below), not input.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=False)

    home: Path = Field(
        default=CHECKOUT,
        description="Project folder: default place of `.pgdata/`, `.dagster_home/` (for the "
        "`training-pipeline` commands), `datasets/`, `embedding_models.toml` and `workspace.yaml`",
    )
    pgdata: Path = Field(
        default=None,  # type: ignore[assignment]  # filled in from `home`
        description="Data folder of the embedded PostgreSQL (used when `DATABASE_URL` is unset)",
    )
    datasets_dir: Path = Field(
        default=None,  # type: ignore[assignment]
        description="Folder of the dataset snapshots",
    )
    models_toml: Path = Field(
        default=None,  # type: ignore[assignment]
        description="The embedding models file",
    )
    max_videos_per_range: int = Field(
        default=DEFAULT_MAX_VIDEOS_PER_RANGE,
        description="Videos per new aid range, for `aid_ranges_sensor` and `partitions sync`",
    )
    partial_range_delay_minutes: float = Field(
        default=360.0,
        description="How long a partial last range waits (since its first video was seen) "
        "before `aid_ranges_sensor` registers it",
    )
    refresh_cron: str = Field(
        default=DEFAULT_REFRESH_CRON,
        description="Cron schedule of `refresh_changed_ranges` (read when the code location loads)",
    )
    refresh_timezone: str = Field(
        default=DEFAULT_REFRESH_TIMEZONE,
        description="Time zone of that schedule, e.g. `Asia/Shanghai`",
    )
    max_inconsistent_share: float = Field(
        default=0.2,
        description="Warning bound of the check `inconsistent_share_within_bound`: the share of "
        "rows whose annotators disagree",
    )
    db_reconnect_seconds: float = Field(
        default=60.0,
        description="How long the embedding step keeps reconnecting to PostgreSQL to store a "
        "batch of vectors after the connection broke (a server restart) before the step fails",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _parse(cls, value: Any, info: ValidationInfo) -> Any:
        """Blank is unset; then each field's own rule, with a message that says what is expected."""
        field = info.field_name or ""
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault
        return _PARSERS[field](value)

    @model_validator(mode="after")
    def _folders_default_to_home(self) -> Settings:
        for field, name in (
            ("pgdata", ".pgdata"),
            ("datasets_dir", "datasets"),
            ("models_toml", "embedding_models.toml"),
        ):
            if getattr(self, field) is None:
                setattr(self, field, self.home / name)
        return self


def _whole_number_at_least_1(value: Any) -> int:
    try:
        number = int(value) if not isinstance(value, bool | float) else None
    except ValueError:
        number = None
    if number is None or number < 1:
        raise ValueError("expected a whole number, at least 1")
    return number


def _minutes(value: Any) -> float:
    try:
        minutes = float(value)
    except ValueError:
        minutes = math.nan
    if not minutes >= 0:
        raise ValueError("expected minutes, 0 or more")
    return minutes


def _share(value: Any) -> float:
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0 <= share <= 1:
        raise ValueError("expected a share from 0 to 1, e.g. 0.2")
    return share


def _seconds(value: Any) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValueError("expected seconds, 0 or more, e.g. 60")
    return seconds


def _cron(value: Any) -> str:
    if not is_valid_cron(str(value)):
        raise ValueError(
            "expected a cron schedule of five fields (minute hour day month weekday), "
            f"e.g. {DEFAULT_REFRESH_CRON!r}"
        )
    return str(value)


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected a time zone, e.g. UTC or Asia/Shanghai") from None
    return str(value)


def _folder(value: Any) -> Path:
    return Path(value).resolve()


_PARSERS = {
    "home": _folder,
    "pgdata": _folder,
    "datasets_dir": _folder,
    "models_toml": Path,  # as given: errors about the file show the path the user wrote
    "max_videos_per_range": _whole_number_at_least_1,
    "partial_range_delay_minutes": _minutes,
    "refresh_cron": _cron,
    "refresh_timezone": _timezone,
    "max_inconsistent_share": _share,
    "db_reconnect_seconds": _seconds,
}

_CRON_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_ITEM = re.compile(r"(\*|\?|[0-9A-Za-z#]+(-[0-9A-Za-z#]+)?)(/[1-9][0-9]*)?")  # whole item


def is_valid_cron(text: str) -> bool:
    """Whether `text` has the shape of a cron schedule: five fields of numbers within their
    bounds, ranges, steps, lists, `*` (or an alias such as `@daily`). Deliberately lenient about
    names and extensions (`MON`, `L`, `5#2`): Dagster's own check still runs when the schedule
    is built, and names the variable too."""
    text = text.strip()
    if text.lower() in _CRON_ALIASES:
        return True
    fields = text.split()
    if len(fields) != len(_CRON_FIELDS):
        return False
    for field, (low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for item in field.split(","):
            match = _CRON_ITEM.fullmatch(item)
            if not match:
                return False
            numbers = [int(part) for part in match.group(1).split("-") if part.isdigit()]
            if any(not low <= number <= high for number in numbers):
                return False
    return True


def load_settings() -> Settings:
    """The settings of the current environment, validated (a `SettingsError` names every bad
    variable). Cheap: cached per set of `TRAINING_PIPELINE_*` values."""
    values = tuple(sorted((name, value) for name, value in os.environ.items() if _is_ours(name)))
    return _load(values)


def _is_ours(name: str) -> bool:
    return name.upper().startswith(ENV_PREFIX)


@lru_cache(maxsize=16)
def _load(values: tuple[tuple[str, str], ...]) -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raw = {name.upper(): value.strip() for name, value in values}
        lines = []
        for detail in error.errors():
            name = env_var(str(detail["loc"][0]))
            message = detail["msg"].removeprefix("Value error, ")
            lines.append(f"{name}={raw.get(name, '')!r}: {message}")
        raise SettingsError("\n".join(lines)) from None


def project_root() -> Path:
    """`$TRAINING_PIPELINE_HOME`, else the checkout that holds this package."""
    return load_settings().home
