"""Consensus labels: latest label per user, majority, ties, disagreement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from training_pipeline.core.labels import consensus_labels

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rows(*votes: tuple[int, bool, str]) -> pd.DataFrame:
    """Label rows in the given order, one minute apart."""
    return pd.DataFrame(
        [
            (index + 1, aid, label, user, T0 + timedelta(minutes=index))
            for index, (aid, label, user) in enumerate(votes)
        ],
        columns=["id", "aid", "label", "user", "created_at"],
    )


def result_of(frame: pd.DataFrame, **kwargs) -> dict[int, tuple[bool, bool, int, int]]:
    out = consensus_labels(frame, **kwargs)
    return {
        row.aid: (row.label, row.inconsistent, row.positive_votes, row.negative_votes)
        for row in out.itertuples()
    }


def test_single_vote():
    assert result_of(rows((1, True, "a"))) == {1: (True, False, 1, 0)}


def test_majority_wins_and_flags_disagreement():
    got = result_of(rows((1, True, "a"), (1, True, "b"), (1, False, "c")))
    assert got == {1: (True, True, 2, 1)}


@pytest.mark.parametrize(("policy", "expected"), [("negative", False), ("positive", True)])
def test_tie_follows_policy(policy, expected):
    got = result_of(rows((1, True, "a"), (1, False, "b")), tie_policy=policy)
    assert got == {1: (expected, True, 1, 1)}


def test_tie_excluded():
    assert result_of(rows((1, True, "a"), (1, False, "b")), tie_policy="exclude") == {}


def test_relabel_by_the_same_user_replaces_their_vote():
    got = result_of(rows((1, True, "a"), (1, False, "b"), (1, False, "a")))
    assert got == {1: (False, False, 0, 2)}


def test_same_instant_relabel_is_ordered_by_id():
    frame = rows((1, True, "a"), (1, False, "a"))
    frame["created_at"] = T0
    assert result_of(frame) == {1: (False, False, 0, 1)}


def test_no_labels_gives_no_rows():
    out = consensus_labels(rows())
    assert out.empty
    assert list(out.columns) == [
        "aid",
        "label",
        "inconsistent",
        "positive_votes",
        "negative_votes",
        "user_labels_json",
    ]


def test_mixed_videos_at_once():
    got = result_of(
        rows(
            (1, True, "a"),
            (2, False, "a"),
            (2, False, "b"),
            (3, True, "a"),
            (3, False, "b"),
            (3, True, "c"),
            (3, True, "d"),
        )
    )
    assert got == {1: (True, False, 1, 0), 2: (False, False, 0, 2), 3: (True, True, 3, 1)}


def test_user_labels_json_has_each_users_latest_label_and_time():
    import json

    out = consensus_labels(rows((1, True, "a"), (1, False, "a"), (1, True, "b")))
    users = json.loads(out.loc[0, "user_labels_json"])
    assert users == [
        {"user": "a", "label": False, "created_at": (T0 + timedelta(minutes=1)).isoformat()},
        {"user": "b", "label": True, "created_at": (T0 + timedelta(minutes=2)).isoformat()},
    ]


def test_unknown_tie_policy_is_rejected():
    with pytest.raises(ValueError, match="tie_policy"):
        consensus_labels(rows((1, True, "a")), tie_policy="coin")


def test_a_label_row_without_user_is_not_a_vote_and_is_counted():
    import json

    from training_pipeline.core.labels import unattributed_label_rows

    frame = rows((1, True, "a"), (1, False, None), (1, False, None), (2, True, None))
    out = consensus_labels(frame)
    # Video 1 has one attributable vote; video 2 has none, so it is not labelled at all.
    assert result_of(frame) == {1: (True, False, 1, 0)}
    assert json.loads(out.loc[0, "user_labels_json"])[0]["user"] == "a"
    assert len(json.loads(out.loc[0, "user_labels_json"])) == 1
    assert unattributed_label_rows(frame) == 3


def test_user_labels_json_is_encoded_not_assembled():
    import json

    hostile = 'a"b\\c\n\u0000 🎵'
    out = consensus_labels(rows((1, True, hostile), (1, False, "plain")))
    entries = json.loads(out.loc[0, "user_labels_json"])
    assert [entry["user"] for entry in entries] == sorted([hostile, "plain"])
    assert all(list(entry) == ["user", "label", "created_at"] for entry in entries)
    assert all(datetime.fromisoformat(entry["created_at"]) for entry in entries)
