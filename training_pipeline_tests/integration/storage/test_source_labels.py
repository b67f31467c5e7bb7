"""The embedding step's labelled scope read in one query: the same aids as counting the votes
of each range's label rows (`core.labels.attributed`)."""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.labels import attributed
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.sources import SourceTables

CREATED = datetime(2025, 3, 1, tzinfo=UTC)


def test_labelled_aids_are_the_voted_aids_of_the_ranges(database_url):
    tables = SourceTables("bilibili_metadata", "labelling_result")
    ranges = [AidRange(0, 99), AidRange(200, 299)]
    label_rows = [
        (5, True, "alice"),  # voted
        (5, False, "bob"),  # voted twice: one aid
        (7, True, None),  # only a row naming no user: not a vote
        (99, False, "carol"),  # the range's last aid
        (150, True, "alice"),  # between the ranges
        (200, True, None),
        (200, False, "dave"),  # one vote among unattributed rows
        (300, True, "alice"),  # after the last range
    ]
    with open_connection(database_url) as connection:
        tables.create_source_tables(connection)
        # The old service's table allows a row without a user; the upstream shape does not.
        connection.execute(
            sql.SQL('ALTER TABLE {} ALTER COLUMN "user" DROP NOT NULL').format(
                tables.labels_identifier
            )
        )
        with connection.cursor() as cursor:
            cursor.executemany(
                sql.SQL(
                    'INSERT INTO {} (aid, label, "user", created_at) VALUES (%s, %s, %s, %s)'
                ).format(tables.labels_identifier),
                [(*row, CREATED) for row in label_rows],
            )
        by_rows = set()
        for aid_range in ranges:
            rows = tables.read_label_rows(connection, aid_range)
            by_rows.update(rows.loc[attributed(rows), "aid"].tolist())
        assert tables.read_labelled_aids(connection, ranges) == by_rows == {5, 99, 200}
        assert tables.read_labelled_aids(connection, [AidRange(100, 199)]) == {150}
        assert tables.read_labelled_aids(connection, []) == set()
