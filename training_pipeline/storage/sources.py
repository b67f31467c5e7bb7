"""The upstream tables the pipeline reads: video metadata and human labels.

Names default to the upstream project's (`bilibili_metadata`, `internal.video_type_label`) and
are configurable; they are validated and quoted before they reach SQL. The pipeline only reads
these tables; `create_source_tables` exists for the demo and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.labels import LABEL_ROW_COLUMNS
from training_pipeline.storage.connection import table_exists
from training_pipeline.storage.identifiers import qualified_table, split_table_name

VIDEO_TEXT_COLUMNS = ("aid", "title", "description", "tags")
DEFAULT_METADATA_TABLE = "bilibili_metadata"
DEFAULT_LABELS_TABLE = "internal.video_type_label"


@dataclass(frozen=True)
class SourceTables:
    """Where video metadata and labels live in the database (`table` or `schema.table`)."""

    metadata_table: str = DEFAULT_METADATA_TABLE
    labels_table: str = DEFAULT_LABELS_TABLE

    @property
    def metadata_identifier(self) -> sql.Identifier:
        return qualified_table(self.metadata_table)

    @property
    def labels_identifier(self) -> sql.Identifier:
        return qualified_table(self.labels_table)

    def read_video_text(self, connection: psycopg.Connection, aid_range: AidRange) -> pd.DataFrame:
        """Title, description and tags of every video in the range, ordered by aid."""
        query = sql.SQL(
            "SELECT aid, title, description, tags FROM {} WHERE aid BETWEEN %s AND %s ORDER BY aid"
        ).format(self.metadata_identifier)
        rows = connection.execute(query, (aid_range.first, aid_range.last)).fetchall()
        # dtype=object keeps psycopg's str objects instead of copying them into Arrow strings.
        frame = pd.DataFrame(rows, columns=list(VIDEO_TEXT_COLUMNS), dtype=object)
        return frame.astype({"aid": "int64"})

    def read_label_rows(self, connection: psycopg.Connection, aid_range: AidRange) -> pd.DataFrame:
        """Every label row (all versions) of the videos in the range."""
        query = sql.SQL(
            'SELECT id, aid, label, "user", created_at FROM {} WHERE aid BETWEEN %s AND %s'
        ).format(self.labels_identifier)
        rows = connection.execute(query, (aid_range.first, aid_range.last)).fetchall()
        frame = pd.DataFrame(rows, columns=list(LABEL_ROW_COLUMNS), dtype=object)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        return frame.astype({"id": "int64", "aid": "int64", "label": "bool"})

    def read_labelled_aids(
        self, connection: psycopg.Connection, ranges: Sequence[AidRange]
    ) -> set[int]:
        """Aids in the ranges with at least one vote (a label row that names a user), in one
        query: the set `core.labels.attributed` gives of every range's label rows, without
        fetching the rows."""
        if not ranges:
            return set()
        query = sql.SQL(
            "SELECT DISTINCT l.aid FROM {} l JOIN unnest(%s::bigint[], %s::bigint[])"
            ' AS r(first, last) ON l.aid BETWEEN r.first AND r.last WHERE l."user" IS NOT NULL'
        ).format(self.labels_identifier)
        firsts, lasts = [r.first for r in ranges], [r.last for r in ranges]
        return {row[0] for row in connection.execute(query, (firsts, lasts))}

    def read_all_aids(self, connection: psycopg.Connection) -> list[int]:
        """Every aid in the metadata table, ascending (for planning partitions)."""
        query = sql.SQL("SELECT aid FROM {} ORDER BY aid").format(self.metadata_identifier)
        return [row[0] for row in connection.execute(query)]

    def read_aids_from(self, connection: psycopg.Connection, first_aid: int) -> list[int]:
        """Every aid at or above `first_aid`, ascending (an index range scan on the unique aid)."""
        query = sql.SQL("SELECT aid FROM {} WHERE aid >= %s ORDER BY aid").format(
            self.metadata_identifier
        )
        return [row[0] for row in connection.execute(query, (first_aid,))]

    def video_counts(
        self, connection: psycopg.Connection, ranges: Sequence[AidRange]
    ) -> dict[str, int]:
        """Videos per range key (a correlated count per range: an index range scan each)."""
        query = sql.SQL(
            "SELECT r.key, (SELECT count(*) FROM {} v"
            " WHERE v.aid BETWEEN r.first_aid AND r.last_aid)"
            " FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS r(key, first_aid, last_aid)"
        ).format(self.metadata_identifier)
        params = ([r.key for r in ranges], [r.first for r in ranges], [r.last for r in ranges])
        return {key: int(count) for key, count in connection.execute(query, params)}

    def metadata_table_exists(self, connection: psycopg.Connection) -> bool:
        """Whether the video metadata table exists (a fresh database may have none yet)."""
        return table_exists(connection, self.metadata_identifier)

    def create_source_tables(self, connection: psycopg.Connection) -> None:
        """Create both tables in the upstream shape if they are missing (demo and tests)."""
        metadata = self.metadata_identifier
        labels = self.labels_identifier
        for table_name in (self.metadata_table, self.labels_table):
            schema, _table = split_table_name(table_name)
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    id bigserial PRIMARY KEY,
                    aid bigint NOT NULL UNIQUE,
                    bvid text,
                    description text,
                    uid bigint,
                    tags text,
                    title text,
                    published_at timestamptz,
                    duration integer,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    status integer NOT NULL DEFAULT 0,
                    cover_url text
                )
                """
            ).format(metadata)
        )
        connection.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {} (
                    id serial PRIMARY KEY,
                    aid bigint NOT NULL,
                    label boolean NOT NULL,
                    "user" text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                )
                """
            ).format(labels)
        )
        index_name = sql.Identifier(f"{split_table_name(self.labels_table)[1]}_aid_idx")
        connection.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (aid)").format(index_name, labels)
        )
