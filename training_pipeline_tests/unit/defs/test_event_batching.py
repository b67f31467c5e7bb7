"""Dagster's batched event writes are on wherever the code location is loaded, unless the
environment sets them explicitly."""

import os
import subprocess
import sys

from training_pipeline.defs.event_batching import (
    EVENT_BATCH_SIZE,
    EVENT_BATCH_SIZE_VARIABLE,
    batch_event_writes,
)


def test_unset_means_batched(monkeypatch):
    monkeypatch.delenv(EVENT_BATCH_SIZE_VARIABLE, raising=False)
    batch_event_writes()
    assert os.environ[EVENT_BATCH_SIZE_VARIABLE] == str(EVENT_BATCH_SIZE)


def test_an_explicit_value_wins(monkeypatch):
    monkeypatch.setenv(EVENT_BATCH_SIZE_VARIABLE, "0")
    batch_event_writes()
    assert os.environ[EVENT_BATCH_SIZE_VARIABLE] == "0"


def test_loading_the_code_location_turns_it_on():
    """What a run worker does first: import the definitions module."""
    script = (
        "import os; os.environ.pop('DAGSTER_EVENT_BATCH_SIZE', None); "
        "import training_pipeline.definitions; "
        "print(os.environ['DAGSTER_EVENT_BATCH_SIZE'])"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.split()
    assert printed == [str(EVENT_BATCH_SIZE)]
