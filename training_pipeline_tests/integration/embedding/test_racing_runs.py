"""Two runs racing over the same texts, in a pool of two slots (two processes, two instances,
one database; the API slot guard then lets two steps embed at once): both send every text, one
stores each row, and the numbers each run reports add up to what happened: rows stored, texts
and tokens sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    API_KEY,
    API_KEY_ENV,
    assert_only_valid_vectors,
    cached_rows,
    seed_videos,
    write_models_toml,
)

fault_server = embedding_fixtures.fault_server
PROJECT_ROOT = Path(__file__).resolve().parents[3]

RUN = """
import json, sys, tempfile
from dagster import DagsterInstance
from training_pipeline.definitions import build_definitions
from training_pipeline.defs.keys import (
    AID_RANGES_PARTITIONS_NAME, embedding_cache_key, embedding_pool,
)
from training_pipeline_tests.support import embedding_fixtures as fixtures

defs = build_definitions(sys.argv[1])
with tempfile.TemporaryDirectory() as home, DagsterInstance.local_temp(home) as instance:
    instance.event_log_storage.set_concurrency_slots(embedding_pool(fixtures.REMOTE), 2)
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [fixtures.SEEDED_RANGE])
    result = fixtures.materialize_cache(defs, instance)
    (event,) = [
        e for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == embedding_cache_key(fixtures.REMOTE)
    ]
    metadata = event.event_specific_data.materialization.metadata
    print(json.dumps({name: value.value for name, value in metadata.items()}))
"""


def test_two_racing_runs_report_counts_that_add_up_to_the_rows_stored(
    database_url, tmp_path, fault_server
):
    texts = seed_videos(database_url, None, 24)
    models = write_models_toml(tmp_path / "models.toml", fault_server, max_concurrent_requests=1)
    # Each run has one request in flight; the first request waits for the other run's first, so
    # both have looked the texts up (none cached yet) before either stores anything.
    both_sending = threading.Event()

    def hold_until_both_send(number: int, _texts: list[str]) -> None:
        if number >= 2:
            both_sending.set()
        both_sending.wait(120)

    fault_server.on_request = hold_until_both_send
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), API_KEY_ENV: API_KEY}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, str(models)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    assert both_sending.is_set()
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    rows = cached_rows(database_url)
    assert len(rows) == len(texts)
    assert_only_valid_vectors(rows, texts)
    # Every text was sent by both runs and stored by one of them.
    assert sum(report["run_texts_sent"] for report in reports) == 2 * len(texts)
    assert sum(fault_server.stats.embedded.values()) == 2 * len(texts)
    assert sum(report["run_new_embeddings"] for report in reports) == len(rows)
    assert sum(report["new_embeddings"] for report in reports) == len(rows)
    for report in reports:
        assert (
            report["run_new_embeddings"] + report["run_texts_sent_stored_by_another_run"]
            == report["run_texts_sent"]
        )
        assert report["new_embeddings"] + report["reused_embeddings"] == len(texts)
    # Tokens are what the API counted for what it was sent (what it bills), both runs together.
    assert sum(report["run_tokens_sent"] for report in reports) == fault_server.stats.tokens
    assert sum(report["run_tokens_sent_reported_by_api"] for report in reports) == (
        fault_server.stats.tokens
    )
