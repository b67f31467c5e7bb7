"""SQL identifiers from config: the whole value must be a plain identifier."""

from __future__ import annotations

import pytest

from training_pipeline.storage.identifiers import split_table_name, validate_identifier


@pytest.mark.parametrize("name", ["tp", "training_pipeline", "_x1", "a" * 63])
def test_plain_identifiers_pass(name):
    assert validate_identifier(name, "schema name") == name


@pytest.mark.parametrize("name", ["tp\n", "tp\r\n", " tp", "1tp", "t-p", "a" * 64, "", 'tp"'])
def test_anything_else_is_refused_trailing_newline_included(name):
    with pytest.raises(ValueError, match="invalid schema name"):
        validate_identifier(name, "schema name")


def test_table_names_from_config_are_checked_in_full():
    assert split_table_name("internal.video_type_label") == ("internal", "video_type_label")
    with pytest.raises(ValueError, match="invalid table name"):
        split_table_name("internal.video_type_label\n")
