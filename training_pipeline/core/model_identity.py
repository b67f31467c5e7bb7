"""What makes two vectors comparable: a model's identity fields and their fingerprint.

Cache rows are keyed by the model's TOML name, but a name is only a label: the same name with
another `api_model`, `endpoint`, `send_dimensions` or `extra_body`, or another build of the
bundled model, produces vectors of another space, and mixing the two would pass every check
(sizes and norms agree). So each cache row and the model registry carry a fingerprint, the
SHA-256 of the canonical JSON of the fields below, and a run refuses vectors of another one.

The fields are kept readable (the registry stores them next to the fingerprint) so that a refusal
can say which field changed, from what to what. They never hold a secret: the API key is not an
identity field, and the endpoint is reduced to scheme, host, port and path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from training_pipeline.core.models_config import EmbeddingModelConfig

FINGERPRINT_HEX_DIGITS = 32
"""A fingerprint is the first 128 bits of a SHA-256: no collision among a deployment's configs,
and 32 characters per cache row rather than 64."""


def describe_endpoint(url: str) -> str:
    """The endpoint for messages: scheme, host, port and path, never user info or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_endpoint(url: str) -> str:
    """The endpoint as an identity field: `describe_endpoint` (scheme and host lower-cased by
    `urlsplit`) without the scheme's default port or a trailing slash, so that
    `https://API.x:443/v1/` and `https://api.x/v1` are the same endpoint."""
    parts = urlsplit(url.strip())
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme):
        host = parts.hostname or ""
        url = urlunsplit((parts.scheme, f"[{host}]" if ":" in host else host, parts.path, "", ""))
    return describe_endpoint(url).rstrip("/")


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, no NaN, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ModelIdentity:
    """A configured model as the cache knows it: name, vector size and identity fields."""

    model: str
    dimensions: int
    fields: Mapping[str, Any] = field(hash=False)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(canonical_json(dict(self.fields)).encode("utf-8")).hexdigest()
        return digest[:FINGERPRINT_HEX_DIGITS]


def identity_fields(
    name: str, config: EmbeddingModelConfig, local_model: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The fields that decide which vectors a model returns.

    For an `openai` model: the model name sent, the endpoint, the size, whether the size is sent
    and the extra request fields. For the bundled `local` model, `local_model` describes the
    installed package (version, weights hash, input mode), which the caller computes.
    """
    fields: dict[str, Any] = {"type": config.type, "dimensions": config.dimensions}
    if config.type == "local":
        if local_model is None:
            raise ValueError("a local model's identity needs the installed package's identity")
        fields.update(local_model)
    else:
        fields.update(
            api_model=config.api_model or name,
            endpoint=normalise_endpoint(str(config.endpoint)),
            send_dimensions=config.send_dimensions,
            extra_body=dict(config.extra_body),
        )
    return fields


def describe_changes(stored: Mapping[str, Any], configured: Mapping[str, Any]) -> list[str]:
    """`field: old -> new` for every identity field that differs, in field order."""
    absent = object()
    changes = []
    for name in sorted(set(stored) | set(configured)):
        old, new = stored.get(name, absent), configured.get(name, absent)
        if old != new:
            changes.append(f"{name}: {_shown(old, absent)} -> {_shown(new, absent)}")
    return changes


def _shown(value: Any, absent: object) -> str:
    return "(not recorded)" if value is absent else canonical_json(value)
