"""The contract of the dataset files with the trainer that reads them, checked where they are made.

The trainer of the video-archive project loads a snapshot with `pandas.read_parquet`, stacks the
`embedding` lists into a matrix, casts `label` to int64, and for every row merges
`json.loads(metadata_json)` with `aid`, `inconsistent` and `text_checksum` into one dict per
sample, which PyTorch's `default_collate` batches. `default_collate` raises on `None`, so every
value of `metadata_json` must be a string, a number or a bool: the old writer wrote `""` for a
NULL title, description or tags, and so do we. `user_labels_json` is the old writer's array of
`{"user": str, "label": bool, "created_at": ISO-8601 str}`.

The snapshot writer runs every row through `conform_metadata_json` and
`check_user_labels_json`, so a file can never break this contract, even when its rows were
stored by an older version of the pipeline (whose `metadata_json` had `null` for NULL fields).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

METADATA_TEXT_FIELDS = ("title", "description", "tags")
USER_LABEL_KEYS = ("user", "label", "created_at")

OLD_SIDECAR_KEYS = (
    "dataset_id",
    "description",
    "stats",
    "created_at",
    "file_format",
    "embedding_dimension",
    "total_records",
    "columns",
    "file_size_bytes",
    "compression",
)
"""Keys of the old service's sidecar `<id>.metadata.json`: every sidecar we write has them."""

OLD_STATS_KEYS = (
    "total_records",
    "new_embeddings",
    "reused_embeddings",
    "inconsistent_labels",
    "embedding_model",
)
"""Keys of the old sidecar's `stats` object."""


class DatasetContractError(ValueError):
    """A row that would break the trainer; the message names the aid and what is wrong."""


def _is_plain(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def conform_metadata_json(text: str, aid: int) -> str:
    """`text` unchanged if it keeps the contract; with `null` text fields replaced by `""`.

    Rows stored before the contract was enforced hold `null` for NULL fields; those are repaired
    (the old writer's `""`). Anything else that `default_collate` could not batch (a missing text
    field, a nested value, a non-object) is an error naming the aid: such a row was not written
    by this pipeline and must not be guessed at.
    """
    try:
        fields = json.loads(text)
    except (TypeError, ValueError) as error:
        raise DatasetContractError(f"aid {aid}: metadata_json is not JSON ({error})") from None
    if not isinstance(fields, dict):
        raise DatasetContractError(f"aid {aid}: metadata_json is not a JSON object")
    repaired = False
    for name in METADATA_TEXT_FIELDS:
        if name not in fields:
            raise DatasetContractError(f"aid {aid}: metadata_json has no {name!r}")
        if fields[name] is None:
            fields[name] = ""
            repaired = True
        elif not isinstance(fields[name], str):
            raise DatasetContractError(f"aid {aid}: metadata_json {name!r} is not a string")
    for name, value in fields.items():
        if not _is_plain(value):
            raise DatasetContractError(
                f"aid {aid}: metadata_json {name!r} is {type(value).__name__}, not a string, "
                "number or bool"
            )
    return json.dumps(fields, ensure_ascii=False) if repaired else text


def check_user_labels_json(text: str, aid: int) -> None:
    """Raise unless `text` is the old writer's array of one object per user."""
    try:
        entries = json.loads(text)
    except (TypeError, ValueError) as error:
        raise DatasetContractError(f"aid {aid}: user_labels_json is not JSON ({error})") from None
    if not isinstance(entries, list) or not entries:
        raise DatasetContractError(f"aid {aid}: user_labels_json is not a non-empty JSON array")
    users = set()
    for entry in entries:
        if not isinstance(entry, dict) or tuple(entry) != USER_LABEL_KEYS:
            raise DatasetContractError(
                f"aid {aid}: user_labels_json entries must be objects with keys "
                f"{list(USER_LABEL_KEYS)}, got {entry!r}"
            )
        if not isinstance(entry["user"], str) or not isinstance(entry["label"], bool):
            raise DatasetContractError(f"aid {aid}: user_labels_json has a bad user or label")
        try:
            datetime.fromisoformat(entry["created_at"])
        except (TypeError, ValueError):
            raise DatasetContractError(
                f"aid {aid}: user_labels_json created_at {entry['created_at']!r} is not ISO-8601"
            ) from None
        if entry["user"] in users:
            raise DatasetContractError(f"aid {aid}: user {entry['user']!r} appears twice")
        users.add(entry["user"])


def conform_rows(
    aids: Iterable[int], metadata: Iterable[str], user_labels: Iterable[str]
) -> tuple[list[str], int]:
    """The `metadata_json` values to write (repaired where needed) and how many were repaired;
    raises `DatasetContractError` on a row that cannot be made to keep the contract."""
    conformed: list[str] = []
    repaired = 0
    for aid, metadata_text, labels_text in zip(aids, metadata, user_labels, strict=True):
        value = conform_metadata_json(metadata_text, aid)
        repaired += value is not metadata_text
        conformed.append(value)
        check_user_labels_json(labels_text, aid)
    return conformed, repaired
