"""The settings: every TRAINING_PIPELINE_* variable is a field, read from the current environment,
validated at once, with errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from training_pipeline.settings import (
    CHECKOUT,
    Settings,
    SettingsError,
    env_var,
    is_valid_cron,
    load_settings,
)

PACKAGE = Path(__file__).resolve().parents[2] / "training_pipeline"


def test_defaults_are_the_project_folders(monkeypatch):
    monkeypatch.delenv("TRAINING_PIPELINE_PGDATA")  # the autouse fixture points them elsewhere
    monkeypatch.delenv("TRAINING_PIPELINE_DATASETS_DIR")
    settings = load_settings()
    assert settings.home == CHECKOUT
    assert (settings.pgdata, settings.datasets_dir, settings.models_toml) == (
        CHECKOUT / ".pgdata",
        CHECKOUT / "datasets",
        CHECKOUT / "embedding_models.toml",
    )
    assert settings.max_videos_per_range == 1000
    assert settings.partial_range_delay_minutes == 360
    assert (settings.refresh_cron, settings.refresh_timezone) == ("0 3 * * *", "UTC")
    assert settings.max_inconsistent_share == 0.2
    # A routine restart of PostgreSQL takes a few seconds to half a minute: not a failed run.
    assert settings.db_reconnect_seconds == 60


def test_home_moves_every_folder_and_each_can_be_set_on_its_own(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAINING_PIPELINE_PGDATA")
    monkeypatch.setenv("TRAINING_PIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("TRAINING_PIPELINE_DATASETS_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TRAINING_PIPELINE_MODELS_TOML", "relative/models.toml")
    settings = load_settings()
    assert settings.home == tmp_path
    assert settings.pgdata == tmp_path / ".pgdata"
    assert settings.datasets_dir == tmp_path / "elsewhere"
    assert settings.models_toml == Path("relative/models.toml")  # as given, for error messages


def test_the_current_environment_counts_and_blank_means_unset(monkeypatch):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", " 4 ")
    assert load_settings().max_videos_per_range == 4
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "8")
    assert load_settings().max_videos_per_range == 8
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "  ")
    assert load_settings().max_videos_per_range == 1000
    monkeypatch.setenv("TRAINING_PIPELINE_PARTIAL_RANGE_DELAY_MINUTES", "0")
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_INCONSISTENT_SHARE", "1")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_CRON", "*/30 * * * *")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("TRAINING_PIPELINE_DB_RECONNECT_SECONDS", "1.5")
    settings = load_settings()
    assert settings.db_reconnect_seconds == 1.5
    assert settings.partial_range_delay_minutes == 0
    assert settings.max_inconsistent_share == 1
    assert (settings.refresh_cron, settings.refresh_timezone) == ("*/30 * * * *", "Asia/Shanghai")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_videos_per_range", "abc", "expected a whole number, at least 1"),
        ("max_videos_per_range", "0", "expected a whole number, at least 1"),
        ("max_videos_per_range", "4.5", "expected a whole number, at least 1"),
        ("partial_range_delay_minutes", "-1", "expected minutes, 0 or more"),
        ("partial_range_delay_minutes", "nan", "expected minutes, 0 or more"),
        ("max_inconsistent_share", "1.5", "expected a share from 0 to 1"),
        ("max_inconsistent_share", "lots", "expected a share from 0 to 1"),
        ("refresh_cron", "every day", "expected a cron schedule of five fields"),
        ("refresh_cron", "61 * * * *", "expected a cron schedule of five fields"),
        ("refresh_timezone", "Mars/Olympus", "expected a time zone"),
        ("db_reconnect_seconds", "-1", "expected seconds, 0 or more"),
        ("db_reconnect_seconds", "inf", "expected seconds, 0 or more"),
        ("db_reconnect_seconds", "nan", "expected seconds, 0 or more"),
        ("db_reconnect_seconds", "a minute", "expected seconds, 0 or more"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(monkeypatch, field, value, expected):
    monkeypatch.setenv(env_var(field), value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{env_var(field)}={value!r}: {expected}")


def test_every_bad_variable_is_named_at_once(monkeypatch):
    monkeypatch.setenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE", "abc")
    monkeypatch.setenv("TRAINING_PIPELINE_REFRESH_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).splitlines() == [
        "TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE='abc': expected a whole number, at least 1",
        "TRAINING_PIPELINE_REFRESH_TIMEZONE='Mars/Olympus': expected a time zone, e.g. UTC or "
        "Asia/Shanghai",
    ]
    monkeypatch.delenv("TRAINING_PIPELINE_MAX_VIDEOS_PER_RANGE")
    monkeypatch.delenv("TRAINING_PIPELINE_REFRESH_TIMEZONE")
    assert load_settings().max_videos_per_range == 1000  # a fixed environment loads again


@pytest.mark.parametrize(
    ("cron", "valid"),
    [
        ("0 3 * * *", True),
        ("*/30 * * * *", True),
        ("0,30 8-18/2 * jan,feb MON-FRI", True),
        ("@daily", True),
        ("0 0 L * 5#2", True),
        ("0 3 * *", False),
        ("0 24 * * *", False),
        ("0 3 * * * *", False),
        ("0 3 */0 * *", False),
    ],
)
def test_cron_strings_are_checked_for_their_shape(cron, valid):
    assert is_valid_cron(cron) is valid


def test_every_variable_the_package_reads_is_a_settings_field():
    fields = {env_var(name) for name in Settings.model_fields}
    mentioned = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"TRAINING_PIPELINE_[A-Z_]+[A-Z]", path.read_text("utf-8"))
    }
    assert mentioned <= fields, mentioned - fields
    assert all(field.description for field in Settings.model_fields.values())


def test_the_readme_lists_every_setting_once_with_its_default():
    readme = (PACKAGE.parent / "README.md").read_text("utf-8")
    rows = re.findall(r"^\| `(TRAINING_PIPELINE_[A-Z_]+)` \| ([^|]+) \|", readme, re.M)
    assert sorted(name for name, _ in rows) == sorted(
        env_var(name) for name in Settings.model_fields
    )
    defaults = dict(rows)
    for name in (
        "max_videos_per_range",
        "refresh_cron",
        "refresh_timezone",
        "max_inconsistent_share",
    ):
        assert defaults[env_var(name)].strip() == f"`{Settings.model_fields[name].default}`"
