"""The embedding engine against the fault-injecting server over real HTTP on loopback.

Every fault the issue lists has a test: the answer is retried (or the run fails with a clear
error), and the sink only ever receives complete, valid vectors in input order, from the thread
that started the run (`CheckingSink` checks each of these on every call).
"""

from __future__ import annotations

import threading
import time

import pytest

from training_pipeline.core.text import estimate_tokens, truncate_for_model
from training_pipeline.embedding.clients import (
    MissingApiKeyError,
    OpenAICompatibleClient,
)
from training_pipeline.embedding.engine import EmbeddingFailed, embed_texts
from training_pipeline.embedding.rate_limit import RateLimiter
from training_pipeline.embedding.retry import RetryPolicy
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.embedding_fixtures import (
    API_KEY,
    API_KEY_ENV,
    CheckingSink,
    chinese_texts,
    model_settings,
)
from training_pipeline_tests.support.embedding_server import FAULTS, Fault, server_token_count
from training_pipeline_tests.support.virtual_clock import VirtualClock

fault_server = embedding_fixtures.fault_server

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
RETRIED = sorted(set(FAULTS) - {"400", "401", "shuffled"})


def run(server, texts, sink=None, policy=FAST, limiter=None, **settings):
    config = model_settings(server, **settings)
    client = OpenAICompatibleClient("fault-remote", config)
    sink = sink or CheckingSink(texts)
    stats = embed_texts(client, config, texts, sink, retry_policy=policy, limiter=limiter)
    return stats, sink


@pytest.mark.parametrize("kind", RETRIED)
def test_each_fault_is_retried_and_only_valid_vectors_are_stored(fault_server, kind):
    fault_server.inject(kind, times=2, retry_after=0.05)
    texts = chinese_texts(24)
    stats, sink = run(fault_server, texts, request_timeout_seconds=0.5)
    assert sink.complete and sink.calls == 6  # 24 texts in batches of 4, each stored once
    assert fault_server.stats.faults[kind] == 2
    assert stats.retries == 2 and stats.requests == 6 + 2
    assert sum(stats.errors.values()) == 2
    assert stats.rate_limited == (2 if kind == "429" else 0)


def test_reordered_items_with_correct_indexes_are_put_back_in_input_order(fault_server):
    fault_server.schedule = lambda number, texts: "shuffled"
    texts = chinese_texts(12)
    stats, sink = run(fault_server, texts)
    assert fault_server.stats.faults["shuffled"] == 3
    assert sink.complete and stats.retries == 0  # valid answers: nothing retried


@pytest.mark.parametrize("header", ["ms", "seconds"])
def test_retry_after_is_honoured_and_one_429_does_not_slow_the_limiter_down(fault_server, header):
    wait = 0.4 if header == "ms" else 1.0
    fault_server.inject("429", retry_after=wait, retry_after_header=header)
    texts = chinese_texts(8)
    limiter = RateLimiter(requests_per_minute=6000, max_concurrent=1)
    stats, sink = run(fault_server, texts, limiter=limiter, max_concurrent_requests=1)
    assert sink.complete and stats.rate_limited == 1
    arrivals = fault_server.stats.arrivals
    assert sorted(status for _, _, status in arrivals) == ["200", "200", "429"]
    refused_at = arrivals[[status for _, _, status in arrivals].index("429")][0]
    assert max(arrived for arrived, _, _ in arrivals) - refused_at >= wait  # not a moment sooner
    assert limiter.factor() == 1.0 and stats.slowdowns == 0  # one 429 is no evidence


def paced_by(fault_server, **limits) -> RateLimiter:
    """A limiter that shares a virtual clock with the server's rate-limit window (see
    `virtual_clock`): whether a request is within the limit depends on the limiter's schedule
    only, never on how quickly a loaded machine runs the request threads."""
    clock = VirtualClock()
    fault_server.window_clock = clock.now
    return RateLimiter(clock=clock.now, wait=clock.wait, **limits)


def hold_first_request_until_a_second_arrives(fault_server) -> None:
    """Concurrency shown by the server, not by timing: the first request is answered only once
    a second one is in flight (a client that sends one at a time makes it wait the deadline)."""
    second = threading.Event()

    def on_request(number: int, _texts: list[str]) -> None:
        if number == 1:
            second.wait(timeout=60)
        else:
            second.set()

    fault_server.on_request = on_request


def test_sporadic_429s_are_retried_after_their_retry_after_without_pausing_the_others(
    fault_server,
):
    refused: dict[str, float] = {}  # first text of a refused batch -> when
    retried: dict[str, float] = {}

    def refuse_every_fifth(number: int, batch: list[str]):
        now = time.monotonic()
        if batch[0] in refused:
            retried.setdefault(batch[0], now)
        elif number % 5 == 0:
            refused[batch[0]] = now
            return Fault("429", retry_after=0.3)
        return None

    fault_server.schedule = refuse_every_fifth
    texts = chinese_texts(60)
    limiter = RateLimiter(requests_per_minute=6000, max_concurrent=2)
    stats, sink = run(fault_server, texts, limiter=limiter, max_inputs_per_request=2)
    assert sink.complete and stats.rate_limited == len(refused) >= 3
    assert all(retried[text] - refused[text] >= 0.3 for text in refused)
    # 20% of the answers, but never MIN_429S close together: no evidence, no pause, no slow-down.
    assert stats.slowdowns == 0 and limiter.factor() == 1.0
    assert limiter._blocked_until == float("-inf")


def test_a_server_whose_real_limit_is_half_the_configured_one_slows_the_limiter_down(
    fault_server,
):
    # 8 requests per sliding 2 s window, the client told 16 (8/s, easy even on a loaded
    # machine): once the window is full every request is refused until the limiter learns the
    # real limit from what the server accepted.
    fault_server.latency = 0.02
    fault_server.requests_per_minute, fault_server.window_seconds = 8, 2.0
    texts = chinese_texts(30)
    limiter = paced_by(fault_server, requests_per_minute=480, max_concurrent=4, window_seconds=2.0)
    config = model_settings(fault_server, max_inputs_per_request=1, max_concurrent_requests=4)
    lines: list[str] = []
    sink = CheckingSink(texts)
    stats = embed_texts(
        OpenAICompatibleClient("fault-remote", config),
        config,
        texts,
        sink,
        log=lines.append,
        retry_policy=FAST,
        limiter=limiter,
    )
    assert sink.complete and stats.rate_limited == fault_server.stats.rate_limited > 0
    assert stats.slowdowns >= 1
    slowed = [line for line in lines if "real limit is lower than configured" in line]
    assert slowed and slowed[0].startswith("fault-remote: ") and "requests/min" in slowed[0]


def test_runs_concurrently_at_the_configured_rate_without_any_429(fault_server):
    # The server allows 40 requests per sliding 4 s window (600/min) and answers in 200 ms; 44
    # requests overrun the window. The client is paced at 510/min by a limiter on the window's
    # own virtual clock: at most 34 starts per window, plus 4 in flight (see `virtual_clock`).
    # The rate reached at the full limit in real time is measured by the benchmark.
    fault_server.latency = 0.2
    fault_server.requests_per_minute, fault_server.window_seconds = 40, 4.0
    hold_first_request_until_a_second_arrives(fault_server)
    texts = chinese_texts(44)
    limiter = paced_by(fault_server, requests_per_minute=510, max_concurrent=4, window_seconds=4.0)
    stats, sink = run(
        fault_server, texts, limiter=limiter, max_inputs_per_request=1, max_concurrent_requests=4
    )
    assert sink.complete and stats.requests == 44
    assert fault_server.stats.rate_limited == 0 and stats.retries == 0
    assert 2 <= fault_server.stats.max_in_flight <= 4


def test_tokens_per_minute_pacing_by_the_corrected_count_gets_no_429(fault_server):
    # The server allows 1,400 of its own tokens per sliding 1.5 s window; the texts hold about
    # 2,000, so the run must spread them over more than one window. The client is told the
    # same window (60 s in production) and a limit 15% lower, on the window's virtual clock,
    # with 2 requests in flight (one request's tokens of slack, see `virtual_clock`).
    texts = chinese_texts(40)
    assert sum(server_token_count(text) for text in texts) > 1_400 * 1.4
    fault_server.tokens_per_minute, fault_server.window_seconds = 1_400, 1.5
    limiter = paced_by(fault_server, tokens_per_minute=47_600, max_concurrent=2, window_seconds=1.5)
    stats, sink = run(
        fault_server, texts, limiter=limiter, max_inputs_per_request=2, max_concurrent_requests=2
    )
    assert sink.complete
    assert fault_server.stats.rate_limited == 0 and stats.retries == 0
    assert stats.tokens == fault_server.stats.tokens < stats.estimated_tokens


def test_without_a_configured_limit_429s_are_absorbed_by_retries(fault_server):
    # Counterpart of the test above: the same server does refuse an unpaced client. On the
    # shared virtual clock an unpaced client's requests all arrive at one instant, so the 11th
    # is refused however slowly the machine runs; the Retry-After pause moves the clock on.
    fault_server.latency = 0.1
    fault_server.requests_per_minute, fault_server.window_seconds = 10, 1.0
    texts = chinese_texts(16)
    limiter = paced_by(fault_server, max_concurrent=4)
    stats, sink = run(
        fault_server, texts, limiter=limiter, max_inputs_per_request=1, max_concurrent_requests=4
    )
    assert sink.complete
    assert fault_server.stats.rate_limited > 0 and stats.rate_limited > 0
    assert fault_server.stats.max_in_flight <= 4


def test_requests_respect_input_and_token_caps_and_usage_corrects_the_estimate(fault_server):
    texts = [
        truncate_for_model(text, 100)
        for text in [*chinese_texts(30), "English only text " * 40, "🎵" * 60, "初音" * 200]
    ]
    assert max(estimate_tokens(text) for text in texts) <= 100
    costs: list[int] = []

    class RecordingLimiter(RateLimiter):
        def acquire(self, tokens=1, stop=None):
            costs.append(tokens)
            return super().acquire(tokens, stop)

    limiter = RecordingLimiter(tokens_per_minute=10_000_000, max_concurrent=1)
    stats, sink = run(
        fault_server,
        texts,
        limiter=limiter,
        max_inputs_per_request=5,
        max_tokens_per_request=300,
        max_tokens_per_input=100,
        max_concurrent_requests=1,
    )
    assert sink.complete
    assert fault_server.stats.max_inputs_per_request <= 5
    assert fault_server.stats.max_tokens_per_request <= 300
    # Tokens come from the server's `usage`, which counts fewer than our overestimate...
    assert stats.tokens == stats.reported_tokens == fault_server.stats.tokens
    assert stats.tokens == sum(server_token_count(text) for text in texts)
    assert stats.estimated_tokens == sum(estimate_tokens(text) for text in texts)
    assert stats.tokens < stats.estimated_tokens
    # ...and after the first answer the limiter is charged the corrected count.
    ratio_after_first = costs[1] / fault_server.stats.max_tokens_per_request
    assert costs[0] >= costs[1] and ratio_after_first < 1.0


def test_exhausted_budget_names_model_endpoint_status_and_missing_texts_but_not_the_key(
    fault_server, monkeypatch
):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    fault_server.echo_credentials = True  # error bodies quote the Authorization header
    texts = chinese_texts(40)
    answered = threading.Event()

    def outage_after_three_requests(number: int, _texts: list[str]) -> None:
        if number == 3:
            fault_server.go_down("503")
            answered.set()

    fault_server.on_request = outage_after_three_requests
    sink = CheckingSink(texts)
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05)
    with pytest.raises(EmbeddingFailed) as failure:
        run(fault_server, texts, sink=sink, policy=policy, api_key_env=API_KEY_ENV)
    message = str(failure.value)
    assert answered.is_set()
    assert "'fault-remote'" in message and fault_server.base_url in message
    assert "HTTP 503" in message and "max_retries = 2" in message
    stored = len(sink.vectors)
    assert stored == 8  # the two answered requests were stored, nothing else
    assert f"{len(texts) - stored} of {len(texts)} texts are still missing" in message
    assert "re-run to resume" in message
    assert API_KEY not in message and "DO-NOT-LEAK" not in message
    assert failure.value.stats.texts == stored


@pytest.mark.parametrize("status", ["400", "401"])
def test_errors_that_retrying_cannot_fix_fail_at_once_without_the_key(
    fault_server, monkeypatch, status
):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    fault_server.echo_credentials = True
    fault_server.inject(status)
    texts = chinese_texts(8)
    with pytest.raises(EmbeddingFailed) as failure:
        run(fault_server, texts, api_key_env=API_KEY_ENV, max_concurrent_requests=1)
    message = str(failure.value)
    assert f"HTTP {status}" in message and "not retryable" in message
    assert "8 of 8 texts are still missing" in message
    assert API_KEY not in message
    assert fault_server.stats.requests == 1  # no retry, no further batch


def test_missing_api_key_fails_before_any_request(fault_server, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    config = model_settings(fault_server, api_key_env=API_KEY_ENV)
    with pytest.raises(MissingApiKeyError, match=API_KEY_ENV):
        OpenAICompatibleClient("fault-remote", config)
    assert fault_server.stats.requests == 0


def test_a_failing_store_stops_the_run_and_keeps_what_was_stored(fault_server):
    texts = chinese_texts(80)
    sink = CheckingSink(texts)
    sink.fail_on_call = 3
    fault_server.latency = 0.05
    with pytest.raises(RuntimeError, match="refused"):
        run(fault_server, texts, sink=sink)
    assert len(sink.vectors) == 8  # the two batches before the failure stay stored
    # The run stopped: at most the batches already queued were requested, not all 20.
    assert fault_server.stats.requests <= 3 + 4


def test_progress_lines_come_at_a_steady_cadence_with_rate_and_eta(fault_server):
    fault_server.latency = 0.05
    texts = chinese_texts(40)
    config = model_settings(fault_server, max_inputs_per_request=2, max_concurrent_requests=1)
    client = OpenAICompatibleClient("fault-remote", config)
    lines: list[str] = []
    embed_texts(
        client, config, texts, CheckingSink(texts), log=lines.append, progress_every_seconds=0.25
    )
    assert len(lines) >= 3  # 20 requests of >= 50 ms at one line per 0.25 s, plus the last
    assert all("texts/s" in line and "requests/s" in line and "ETA" in line for line in lines)
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert done == sorted(done) and 0 < done[0] < 40
    assert lines[-1].startswith("fault-remote: 40/40 texts embedded") and "ETA done" in lines[-1]
