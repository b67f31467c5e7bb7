"""The two tables that record an embedding step's batches (see `batch_state` for their use).

`embedding_batches`: one row per job (an input file and the batch created from it): the model
identity, the job's state and attempt, the file's name and id, the batch id, the API's last
status and request counts, the result files, the texts it covers, the aid ranges and the run
that recorded it, and when. `embedding_batch_items`: one row per (job, text checksum) with the
text's estimated tokens, whether its vector was stored, and why not if it failed. The checks
make a job that claims a state it cannot be in (a `submitted` job without a batch id)
unstorable.
"""

from __future__ import annotations

from psycopg import sql

BATCHES_TABLE = "embedding_batches"
BATCH_ITEMS_TABLE = "embedding_batch_items"


def batch_tables_ddl(schema: str) -> list[sql.Composed]:
    """The two tables and their indexes (idempotent)."""
    batches = sql.Identifier(schema, BATCHES_TABLE)
    items = sql.Identifier(schema, BATCH_ITEMS_TABLE)
    return [
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                job_id bigserial PRIMARY KEY,
                model text NOT NULL,
                dimensions integer NOT NULL,
                fingerprint text NOT NULL,
                state text NOT NULL CHECK (state IN
                    ('preparing', 'uploaded', 'submitted', 'collected', 'abandoned')),
                attempt integer NOT NULL CHECK (attempt >= 1),
                input_file_name text NOT NULL UNIQUE,
                input_file_id text,
                batch_id text UNIQUE,
                status text,
                output_file_id text,
                error_file_id text,
                requests_total integer,
                requests_completed integer,
                requests_failed integer,
                texts integer NOT NULL,
                aid_ranges text[] NOT NULL,
                run_id text,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                CHECK (state IN ('preparing', 'abandoned') OR input_file_id IS NOT NULL),
                CHECK (state NOT IN ('submitted', 'collected') OR batch_id IS NOT NULL)
            )
            """
        ).format(batches),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS embedding_batches_open_idx ON {} (model, dimensions)"
            " WHERE state IN ('preparing', 'uploaded', 'submitted')"
        ).format(batches),
        sql.SQL(
            """
            CREATE TABLE IF NOT EXISTS {} (
                job_id bigint NOT NULL REFERENCES {} ON DELETE CASCADE,
                checksum text NOT NULL,
                estimated_tokens integer NOT NULL CHECK (estimated_tokens >= 0),
                state text NOT NULL CHECK (state IN ('pending', 'stored', 'failed')),
                failure text,
                PRIMARY KEY (job_id, checksum)
            )
            """
        ).format(items, batches),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS embedding_batch_items_checksum_idx ON {} (checksum)"
        ).format(items),
    ]
