"""`training-pipeline cache drop MODEL`: asks first, deletes one model's cached vectors and its
registry entries, leaves every other model's alone, and says how many rows went."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import psycopg

from training_pipeline.cli import main
from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.storage.connection import open_connection
from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
from training_pipeline.storage.model_registry import claim_model

DIMS = 4


def cache_some_vectors(url: str, model: str, count: int) -> None:
    identity = ModelIdentity(model, DIMS, {"type": "test"})
    with open_connection(url, autocommit=True) as connection:
        cache = EmbeddingCache(connection, "training_pipeline", identity)
        cache.ensure_table()
        claim_model(connection, "training_pipeline", CACHE_TABLE, identity, print)
        cache.store([f"{n:032x}" for n in range(count)], np.ones((count, DIMS), np.float32))


def counts(url: str) -> dict[str, tuple[int, int]]:
    """Per model: (cached rows, registry entries)."""
    with psycopg.connect(url) as connection:
        rows = dict(
            connection.execute(
                "SELECT model, count(*) FROM training_pipeline.embedding_cache GROUP BY model"
            ).fetchall()
        )
        entries = dict(
            connection.execute(
                "SELECT model, count(*) FROM training_pipeline.embedding_models GROUP BY model"
            ).fetchall()
        )
    return {model: (rows.get(model, 0), entries.get(model, 0)) for model in rows | entries}


def test_cache_drop_deletes_one_models_vectors_after_confirmation(database_url, capsys):
    cache_some_vectors(database_url, "old-e5", 7)
    cache_some_vectors(database_url, "kept", 2)

    unconfirmed = subprocess.run(
        [sys.executable, "-m", "training_pipeline.cli", "cache", "drop", "old-e5"],
        env={**os.environ},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unconfirmed.returncode == 2, unconfirmed.stderr
    assert "pass --yes" in unconfirmed.stderr
    assert counts(database_url) == {"old-e5": (7, 1), "kept": (2, 1)}

    assert main(["cache", "drop", "old-e5", "--yes"]) == 0
    output = capsys.readouterr().out
    assert "deleted 7 cached vectors of model 'old-e5', 1 registry entry and 0 import" in output
    assert counts(database_url) == {"kept": (2, 1)}

    assert main(["cache", "drop", "old-e5", "--yes"]) == 1
    assert "no cached vectors of model 'old-e5'" in capsys.readouterr().out


def test_cache_drop_refuses_a_malformed_name_and_a_missing_cache(database_url, capsys):
    assert main(["cache", "drop", "old-e5\n", "--yes"]) == 2
    assert "model name 'old-e5\\n'" in capsys.readouterr().err
    assert main(["cache", "drop", "old-e5", "--yes"]) == 1
    assert "no embedding cache table" in capsys.readouterr().out
