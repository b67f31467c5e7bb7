"""Hand-made source rows covering every label case and text edge case, with expected results.

Two aid ranges: `0-100` (small aids) and `101-113000000000100` (up to ~10^14).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg

from training_pipeline.storage.sources import SourceTables

RANGE_KEYS = ["0-100", "101-113000000000100"]
BIG = 113_000_000_000_000

SONG = ("初音未来 新曲《星之歌》", "原创曲，作词作曲：某P", "VOCALOID,初音未来,原创曲")
LONG_DESCRIPTION = "这是一段很长的描述，介绍了视频的创作背景。" * 150  # 3,000 characters

VIDEO_ROWS: list[tuple[int, str | None, str | None, str | None]] = [
    (1, *SONG),
    (2, "我的世界 生存第3期", "今天继续建房子", "游戏,我的世界"),
    (3, "洛天依 翻唱 小幸运", None, "洛天依,翻唱"),
    (4, "测试视频", "", ""),
    (5, None, None, None),  # no text at all, but labelled
    (6, "  ", "   ", ""),  # whitespace only, unlabelled
    (7, "乐正绫 原创 🎵✨ 夏日", "emoji 描述 🎶", "乐正绫"),
    (8, "长描述视频", LONG_DESCRIPTION, "测试"),  # truncated for the model
    (9, "无人标注的视频", "普通描述", "日常"),
    (10, *SONG),  # re-upload of 1: same text
    (BIG + 1, *SONG),  # re-upload of 1 in the other range
    (BIG + 2, "言和 原创 新歌", "  新歌发布  ", "言和,原创"),
    (BIG + 3, "星尘 翻唱", "翻唱作品", "星尘"),
    (BIG + 4, "未标注的新视频", "描述", "标签"),
    (BIG + 5, "VOCALOID original song", "English description only", "VOCALOID"),
]

_T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return _T0 + timedelta(minutes=minutes)


LABEL_ROWS: list[tuple[int, bool, str, datetime]] = [
    (1, True, "alice", _at(1)),  # single vote
    (2, False, "alice", _at(2)),  # 2 negative : 1 positive
    (2, False, "bob", _at(3)),
    (2, True, "carol", _at(4)),
    (3, True, "alice", _at(5)),  # 2 positive : 1 negative
    (3, True, "bob", _at(6)),
    (3, False, "carol", _at(7)),
    (4, True, "alice", _at(8)),  # tie
    (4, False, "bob", _at(9)),
    (5, True, "alice", _at(10)),  # labelled, but no text
    (7, True, "alice", _at(11)),  # alice changes her mind: only her latest row counts
    (7, False, "bob", _at(12)),
    (7, False, "alice", _at(13)),
    (8, True, "bob", _at(14)),
    (10, True, "carol", _at(15)),
    (BIG + 1, True, "dave", _at(16)),
    (BIG + 2, True, "alice", _at(17)),  # mixed, with a relabel: 3 positive : 1 negative
    (BIG + 2, True, "bob", _at(18)),
    (BIG + 2, False, "carol", _at(19)),
    (BIG + 2, False, "dave", _at(20)),
    (BIG + 2, True, "carol", _at(21)),
    (BIG + 3, False, "alice", _at(22)),  # a relabel resolves the disagreement
    (BIG + 3, True, "bob", _at(23)),
    (BIG + 3, True, "alice", _at(24)),
    (BIG + 5, False, "carol", _at(25)),
]

# aid -> (label with the default tie policy, inconsistent, positive votes, negative votes)
EXPECTED_LABELS: dict[int, tuple[bool, bool, int, int]] = {
    1: (True, False, 1, 0),
    2: (False, True, 1, 2),
    3: (True, True, 2, 1),
    4: (False, True, 1, 1),
    7: (False, False, 0, 2),
    8: (True, False, 1, 0),
    10: (True, False, 1, 0),
    BIG + 1: (True, False, 1, 0),
    BIG + 2: (True, True, 3, 1),
    BIG + 3: (True, False, 2, 0),
    BIG + 5: (False, False, 0, 1),
}
# Distinct texts of labelled videos with text, per range (1 and 10 share a text).
DISTINCT_LABELLED_TEXTS = {"0-100": 6, "101-113000000000100": 4}


def insert_source_rows(
    database_url: str,
    videos: Sequence[tuple[int, str | None, str | None, str | None]] = VIDEO_ROWS,
    labels: Sequence[tuple[int, bool, str, datetime]] = LABEL_ROWS,
) -> None:
    """Create the upstream tables and insert (aid, title, description, tags) videos and
    (aid, label, user, created_at) label rows: the hand-made ones unless told otherwise."""
    with psycopg.connect(database_url) as connection:
        SourceTables().create_source_tables(connection)
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO bilibili_metadata (aid, title, description, tags)"
                " VALUES (%s, %s, %s, %s)",
                videos,
            )
            cursor.executemany(
                'INSERT INTO internal.video_type_label (aid, label, "user", created_at)'
                " VALUES (%s, %s, %s, %s)",
                labels,
            )
