"""The row-level contract of the dataset files with the trainer (`dataset_contract`)."""

from __future__ import annotations

import json

import pytest

from training_pipeline.core.dataset_contract import (
    DatasetContractError,
    check_user_labels_json,
    conform_metadata_json,
    conform_rows,
)
from training_pipeline.core.text import metadata_json


def test_metadata_json_has_strings_only_even_for_null_fields():
    assert json.loads(metadata_json(None, None, None)) == {
        "title": "",
        "description": "",
        "tags": "",
    }
    assert json.loads(metadata_json("标题 🎵", "", "a,b")) == {
        "title": "标题 🎵",
        "description": "",
        "tags": "a,b",
    }


def test_rows_stored_with_nulls_by_an_older_version_are_repaired():
    old = '{"title": "t", "description": null, "tags": null}'
    assert json.loads(conform_metadata_json(old, 1)) == {
        "title": "t",
        "description": "",
        "tags": "",
    }
    good = metadata_json("t", "d", "g")
    assert conform_metadata_json(good, 1) is good  # unchanged rows keep their exact bytes
    assert conform_metadata_json('{"title": "", "description": "", "tags": "", "n": 1}', 1)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"title": "t", "description": "d"}',
        '{"title": 3, "description": "d", "tags": "g"}',
        '{"title": "t", "description": "d", "tags": "g", "extra": {"nested": 1}}',
        '{"title": "t", "description": "d", "tags": "g", "extra": null}',
    ],
)
def test_metadata_json_the_trainer_cannot_batch_is_refused(text):
    with pytest.raises(DatasetContractError, match="aid 7"):
        conform_metadata_json(text, 7)


@pytest.mark.parametrize(
    "text",
    [
        '{"alice": {"label": true, "created_at": "2025-01-01T00:00:00+00:00"}}',
        "[]",
        '[{"user": null, "label": true, "created_at": "2025-01-01T00:00:00+00:00"}]',
        '[{"user": "a", "label": 1, "created_at": "2025-01-01T00:00:00+00:00"}]',
        '[{"user": "a", "label": true, "created_at": "yesterday"}]',
        '[{"label": true, "user": "a", "created_at": "2025-01-01T00:00:00+00:00"}]',
        '[{"user": "a", "label": true, "created_at": "2025-01-01T00:00:00+00:00"},'
        ' {"user": "a", "label": false, "created_at": "2025-01-02T00:00:00+00:00"}]',
    ],
)
def test_user_labels_json_must_be_the_old_writers_array(text):
    with pytest.raises(DatasetContractError):
        check_user_labels_json(text, 1)


def test_conform_rows_counts_repairs():
    good_labels = '[{"user": "a", "label": true, "created_at": "2025-01-01T00:00:00+00:00"}]'
    metadata, repaired = conform_rows(
        [1, 2],
        [metadata_json("t", None, None), '{"title": null, "description": "", "tags": ""}'],
        [good_labels, good_labels],
    )
    assert repaired == 1
    assert all(None not in json.loads(text).values() for text in metadata)
