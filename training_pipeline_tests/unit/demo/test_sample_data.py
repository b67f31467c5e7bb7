# Over 300 lines: one short test per documented property of the sample data.
"""Tests for the deterministic demo sample data (training_pipeline_demo.sample_data).

Each test pins one documented property with concrete numbers, so the demo keeps exercising the
edge cases the pipeline must survive (NULL/blank text, re-uploads, annotator disagreement, ...).
"""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from training_pipeline_demo.sample_data import (
    LABEL_COLUMNS,
    METADATA_COLUMNS,
    SampleData,
    aid_to_bvid,
    generate_sample_data,
)

V = {name: i for i, name in enumerate(METADATA_COLUMNS)}
L = {name: i for i, name in enumerate(LABEL_COLUMNS)}
TEXT_FIELDS = ("title", "description", "tags")
SONG_MARKERS = ("VOCALOID", "SynthV", "原创曲", "翻调", "术力口", "V家")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
KANA = re.compile("[\u3040-\u30ff]")
LATIN_WORD = re.compile("[A-Za-z]{3,}")


@pytest.fixture(scope="module")
def data() -> SampleData:
    return generate_sample_data()


@pytest.fixture(scope="module")
def latest(data: SampleData) -> dict[int, dict[str, bool]]:
    """aid -> {user: latest label}, the view a dataset builder would take."""
    per_aid: dict[int, dict[str, bool]] = defaultdict(dict)
    for row in data.labels:  # rows are in created_at order, so later rows win
        per_aid[row[L["aid"]]][row[L["user"]]] = row[L["label"]]
    return dict(per_aid)


def _is_blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _combined(row: tuple) -> str:
    return "\n".join(row[V[name]] or "" for name in TEXT_FIELDS)


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff"


def _mostly_chinese(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(map(_is_cjk, letters)) / len(letters) >= 0.5


def _reupload_groups(data: SampleData) -> list[list[tuple]]:
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for row in data.videos:
        if not all(_is_blank(row[V[name]]) for name in TEXT_FIELDS):
            groups[tuple(row[V[name]] for name in TEXT_FIELDS)].append(row)
    return [rows for rows in groups.values() if len(rows) > 1]


# --- API shape and determinism ------------------------------------------------------------


def test_column_constants_match_upstream_tables() -> None:
    assert METADATA_COLUMNS == (
        "aid",
        "bvid",
        "description",
        "uid",
        "tags",
        "title",
        "published_at",
        "duration",
        "created_at",
        "status",
        "cover_url",
    )
    assert LABEL_COLUMNS == ("aid", "label", "user", "created_at")


def test_same_arguments_give_identical_output(data: SampleData) -> None:
    assert generate_sample_data() == data
    assert generate_sample_data(200, seed=5) == generate_sample_data(200, seed=5)


def test_different_seed_gives_different_output() -> None:
    assert generate_sample_data(200, seed=1).videos != generate_sample_data(200, seed=2).videos


def test_sample_data_is_frozen(data: SampleData) -> None:
    with pytest.raises(AttributeError):
        data.videos = []  # type: ignore[misc]


# --- Metadata rows --------------------------------------------------------------------------


def test_row_shapes_and_types(data: SampleData) -> None:
    assert len(data.videos) == 3600
    for row in data.videos:
        assert len(row) == len(METADATA_COLUMNS) == 11
        assert isinstance(row[V["aid"]], int)
        assert isinstance(row[V["uid"]], int) and row[V["uid"]] > 0
        assert isinstance(row[V["duration"]], int) and 0 < row[V["duration"]] <= 6 * 3600
        assert row[V["status"]] == 0
        assert row[V["cover_url"]].startswith("http://i") and row[V["cover_url"]].endswith(".jpg")
        for name in TEXT_FIELDS:
            assert row[V[name]] is None or isinstance(row[V[name]], str)


def test_timestamps_are_tz_aware_utc_and_fixed(data: SampleData) -> None:
    stamps = [row[V[c]] for row in data.videos for c in ("published_at", "created_at")]
    stamps += [row[L["created_at"]] for row in data.labels]
    for stamp in stamps:
        assert isinstance(stamp, datetime)
        assert stamp.utcoffset() == timedelta(0) and stamp.tzinfo == UTC
    # Derived from a fixed base, never from now(): everything sits in a known window.
    assert min(stamps) >= datetime(2009, 1, 1, tzinfo=UTC)
    assert max(stamps) <= datetime(2025, 6, 1, tzinfo=UTC)
    for row in data.videos:
        assert row[V["published_at"]] <= row[V["created_at"]]


def test_aids_unique_sorted_and_positive(data: SampleData) -> None:
    aids = [row[V["aid"]] for row in data.videos]
    assert aids == sorted(aids)
    assert len(set(aids)) == len(aids)
    assert min(aids) > 0


def test_aids_fall_into_three_sparse_clusters(data: SampleData) -> None:
    aids = [row[V["aid"]] for row in data.videos]
    small = [a for a in aids if a < 100_000]
    old = [a for a in aids if 10**7 <= a < 10**9]
    recent = [a for a in aids if 113 * 10**12 <= a < 114 * 10**12]
    assert len(small) + len(old) + len(recent) == len(aids)
    assert 0.13 <= len(small) / len(aids) <= 0.17
    assert 0.33 <= len(old) / len(aids) <= 0.37
    assert 0.48 <= len(recent) / len(aids) <= 0.52
    for cluster in (old, recent):  # sparse: far from a dense 1..n range
        gaps = [b - a for a, b in itertools.pairwise(cluster)]
        assert statistics.median(gaps) > 10_000


def test_bvids_follow_av_to_bv_scheme(data: SampleData) -> None:
    assert aid_to_bvid(170001) == "BV17x411w7KC"  # the publicly documented example
    assert aid_to_bvid(1) == "BV1xx411c7mQ"
    bvids = [row[V["bvid"]] for row in data.videos]
    assert len(set(bvids)) == len(bvids)
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    assert all(re.fullmatch(f"BV1[{alphabet}]{{9}}", bvid) for bvid in bvids)
    assert all(row[V["bvid"]] == aid_to_bvid(row[V["aid"]]) for row in data.videos)


def test_text_length_limits(data: SampleData) -> None:
    titles = [row[V["title"]] for row in data.videos if row[V["title"]] is not None]
    descriptions = [row[V["description"]] for row in data.videos if row[V["description"]]]
    assert max(map(len, titles)) <= 80
    assert max(map(len, descriptions)) <= 2000
    for row in data.videos:
        tags = row[V["tags"]]
        if not _is_blank(tags):
            names = tags.split(",")
            assert 1 <= len(names) <= 10
            assert all(name.strip() for name in names)
    tag_counts = Counter(len(row[V["tags"]].split(",")) for row in data.videos if row[V["tags"]])
    assert tag_counts[10] > 0 and tag_counts[1] > 0


def test_combined_text_median_length(data: SampleData) -> None:
    assert 150 <= statistics.median(len(_combined(row)) for row in data.videos) <= 250


def test_text_is_mostly_chinese_with_some_foreign_words_and_emoji(data: SampleData) -> None:
    texts = [_combined(row) for row in data.videos if _combined(row).strip()]
    assert sum(map(_mostly_chinese, texts)) / len(texts) >= 0.9
    emoji_share = sum(bool(EMOJI.search(t)) for t in texts) / len(texts)
    kana_share = sum(bool(KANA.search(t)) for t in texts) / len(texts)
    assert 0.01 <= emoji_share <= 0.15
    assert 0.01 <= kana_share <= 0.15
    assert sum(bool(LATIN_WORD.search(t)) for t in texts) > 100


def test_texts_mention_virtual_singers_and_other_topics(data: SampleData) -> None:
    texts = [_combined(row) for row in data.videos]
    for word in ("洛天依", "乐正绫", "言和", "初音未来", "星尘", "心华", "VOCALOID", "SynthV"):
        assert sum(word in t for t in texts) >= 10, word
    for word in ("vlog", "实况", "教程", "MMD", "翻唱", "直播切片"):
        assert sum(word in t for t in texts) >= 10, word


def test_descriptions_are_mostly_distinct(data: SampleData) -> None:
    descriptions = [
        row[V["description"]]
        for row in data.videos
        if not _is_blank(row[V["description"]]) and row[V["description"]] != "-"
    ]
    assert len(set(descriptions)) / len(descriptions) >= 0.9


# --- Edge cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEXT_FIELDS)
def test_null_and_blank_fields_present(data: SampleData, name: str) -> None:
    values = [row[V[name]] for row in data.videos]
    nulls = sum(v is None for v in values)
    empty = sum(v == "" for v in values)
    whitespace = sum(v is not None and v != "" and not v.strip() for v in values)
    assert 0.01 * len(values) <= nulls <= 0.08 * len(values)
    assert empty >= 3 and whitespace >= 3
    assert empty + whitespace <= 0.06 * len(values)


def test_placeholder_dash_descriptions(data: SampleData) -> None:
    assert sum(row[V["description"]] == "-" for row in data.videos) >= 20


def test_videos_without_any_text(data: SampleData) -> None:
    textless = [r for r in data.videos if all(_is_blank(r[V[n]]) for n in TEXT_FIELDS)]
    assert len(textless) >= 5


def test_very_long_descriptions(data: SampleData) -> None:
    long = [r for r in data.videos if len(r[V["description"]] or "") >= 1900]
    assert len(long) >= 3


def test_reupload_groups(data: SampleData) -> None:
    groups = _reupload_groups(data)
    assert len(groups) >= 20
    assert max(map(len, groups)) >= 3  # some content was re-uploaded more than once
    for rows in groups:
        assert len({row[V["aid"]] for row in rows}) == len(rows)
        assert len({row[V["uid"]] for row in rows}) >= 2  # re-uploaded by someone else


def test_hard_minimums_hold_at_1000_videos() -> None:
    small = generate_sample_data(1000, seed=3)
    textless = [r for r in small.videos if all(_is_blank(r[V[n]]) for n in TEXT_FIELDS)]
    assert len(textless) >= 5
    assert sum(len(r[V["description"]] or "") >= 1900 for r in small.videos) >= 3
    assert len(_reupload_groups(small)) >= 20


# --- Labels ---------------------------------------------------------------------------------


def test_label_rows_shape_order_and_aids(data: SampleData) -> None:
    aids = {row[V["aid"]] for row in data.videos}
    created = {row[V["aid"]]: row[V["created_at"]] for row in data.videos}
    for row in data.labels:
        assert len(row) == len(LABEL_COLUMNS) == 4
        assert row[L["aid"]] in aids
        assert isinstance(row[L["label"]], bool)
        assert isinstance(row[L["user"]], str)
        assert row[L["created_at"]] >= created[row[L["aid"]]]
    stamps = [row[L["created_at"]] for row in data.labels]
    assert stamps == sorted(stamps)


def test_labelled_share(latest: dict[int, dict[str, bool]]) -> None:
    assert 900 <= len(latest) <= 1100
    assert 0.25 <= len(latest) / 3600 <= 0.30


def test_annotators(data: SampleData, latest: dict[int, dict[str, bool]]) -> None:
    users = {row[L["user"]] for row in data.labels}
    assert len(users) >= 3
    assert {"alice", "bob", "carol"} <= users
    per_video = Counter(len(labels) for labels in latest.values())
    assert sum(per_video[k] for k in (1, 2, 3)) / len(latest) >= 0.8
    assert per_video[len(users)] >= 30  # some videos were labelled by every annotator
    assert per_video[1] >= 200 and per_video[2] >= 150


def test_annotator_disagreement(latest: dict[int, dict[str, bool]]) -> None:
    disagreeing = [labels for labels in latest.values() if len(set(labels.values())) == 2]
    assert 0.05 <= len(disagreeing) / len(latest) <= 0.11
    ties = [labels for labels in disagreeing if 2 * sum(labels.values()) == len(labels)]
    assert len(ties) >= 20
    assert any(len(labels) == 2 for labels in ties)
    assert len(ties) < len(disagreeing)  # some disagreements are a clear minority


def test_relabels(data: SampleData) -> None:
    history: dict[tuple[int, str], list[bool]] = defaultdict(list)
    for row in data.labels:
        history[(row[L["aid"]], row[L["user"]])].append(row[L["label"]])
    extra_rows = len(data.labels) - len(history)
    assert 0.03 <= extra_rows / len(data.labels) <= 0.08
    relabelled = [values for values in history.values() if len(values) > 1]
    flipped = sum(values[-1] != values[0] for values in relabelled)
    assert flipped >= 10
    assert len(relabelled) - flipped >= 5  # some relabels confirm the earlier value


def test_song_share_and_labels_match_content(
    data: SampleData, latest: dict[int, dict[str, bool]]
) -> None:
    texts = {row[V["aid"]]: _combined(row) for row in data.videos}
    positive = [aid for aid, labels in latest.items() if 2 * sum(labels.values()) > len(labels)]
    negative = [aid for aid, labels in latest.items() if 2 * sum(labels.values()) < len(labels)]
    assert 0.33 <= len(positive) / (len(positive) + len(negative)) <= 0.50  # ~40 % songs

    def song_marked(aids: list[int]) -> float:
        return sum(any(m in texts[aid] for m in SONG_MARKERS) for aid in aids) / len(aids)

    # Labels follow the content: song vocabulary is common in positives, rare in negatives
    # (negatives still include hard cases such as tuning tutorials and human covers).
    assert song_marked(positive) >= 0.75
    assert song_marked(negative) <= 0.25


# --- Parameters -----------------------------------------------------------------------------


def test_small_sample_scales_down() -> None:
    small = generate_sample_data(200, seed=11)
    aids = [row[V["aid"]] for row in small.videos]
    assert len(aids) == 200 and aids == sorted(aids) and len(set(aids)) == 200
    labelled = {row[L["aid"]] for row in small.labels}
    assert labelled <= set(aids)
    assert 40 <= len(labelled) <= 70


def test_single_video() -> None:
    single = generate_sample_data(1, seed=0)
    assert len(single.videos) == 1
    assert {row[L["aid"]] for row in single.labels} <= {single.videos[0][V["aid"]]}


@pytest.mark.parametrize("n_videos", [0, -5])
def test_rejects_non_positive_sizes(n_videos: int) -> None:
    with pytest.raises(ValueError, match="n_videos"):
        generate_sample_data(n_videos)


@pytest.mark.parametrize("seed", [1, 7])
def test_key_statistics_hold_for_other_seeds(seed: int) -> None:
    other = generate_sample_data(seed=seed)
    per_aid: dict[int, dict[str, bool]] = defaultdict(dict)
    for row in other.labels:
        per_aid[row[L["aid"]]][row[L["user"]]] = row[L["label"]]
    disagreement = sum(len(set(v.values())) == 2 for v in per_aid.values()) / len(per_aid)
    assert 900 <= len(per_aid) <= 1100
    assert 0.05 <= disagreement <= 0.11
    assert 150 <= statistics.median(len(_combined(row)) for row in other.videos) <= 250
    assert len(_reupload_groups(other)) >= 20
