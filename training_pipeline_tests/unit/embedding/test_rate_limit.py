"""The rate limiter and the retry policy, on a virtual clock where timing is the subject.

The limiter is pure scheduling logic: a virtual clock makes every assertion exact and instant.
The real-HTTP behaviour (no 429 against a server enforcing the same limit) is in
integration/embedding/test_engine.py; when 429s mean a lower limit is test_congestion.py.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from training_pipeline.core.text import estimate_tokens
from training_pipeline.embedding.batching import plan_batches
from training_pipeline.embedding.congestion import EVIDENCE_ANSWERS, RUN_429S
from training_pipeline.embedding.rate_limit import (
    JITTER_SECONDS,
    PACING_HEADROOM,
    LimiterStopped,
    RateLimiter,
    request_headroom,
)
from training_pipeline.embedding.retry import RetryPolicy, parse_retry_after


class VirtualClock:
    """`now()` and a `wait()` that advances time instead of sleeping."""

    def __init__(self) -> None:
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    def wait(self, seconds: float, stop: threading.Event | None) -> bool:
        self.time += max(0.0, seconds)
        return True


def limiter_on(clock: VirtualClock, **limits) -> RateLimiter:
    return RateLimiter(**limits, clock=clock.now, wait=clock.wait)


def max_in_window(starts: list[float], costs: list[int], window: float) -> int:
    """The largest total cost of requests starting within any `window` seconds."""
    best = 0
    left = 0
    total = 0
    for right, start in enumerate(starts):
        total += costs[right]
        while starts[left] <= start - window:
            total -= costs[left]
            left += 1
        best = max(best, total)
    return best


def test_requests_are_paced_evenly_below_the_limit_with_no_burst():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=8)
    starts = []
    for _ in range(1500):
        starts.append(limiter.acquire())
        limiter.release()
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(starts)}
    assert gaps == {round(60 / (600 * request_headroom(600)), 9)}  # evenly, from the start
    # No sliding minute holds more than the limit, even stretched by the jitter allowance...
    assert max_in_window(starts, [1] * len(starts), 60.0 + JITTER_SECONDS) <= 600
    # ...and it is close to the limit: 599 of 600 in a minute.
    assert max_in_window(starts, [1] * len(starts), 60.0) >= 599


@pytest.mark.parametrize("limit", [2, 10, 30, 60, 100, 600, 3_000, 10_000])
def test_paced_requests_fit_a_sliding_minute_stretched_by_jitter_at_any_limit(limit):
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=limit)
    starts = []
    for _ in range(3 * limit):
        starts.append(limiter.acquire())
        limiter.release()
    assert max_in_window(starts, [1] * len(starts), 60.0 + JITTER_SECONDS) <= limit
    # A fixed 98% would not fit: 30/min at 98% puts 31 requests in a jittered minute.
    assert request_headroom(30) < 0.98 and request_headroom(600) > 0.99


def test_tokens_per_minute_paces_by_each_request_token_cost():
    clock = VirtualClock()
    limiter = limiter_on(clock, tokens_per_minute=60_000)
    rng = random.Random(7)
    costs = [rng.choice([50, 400, 2_000, 9_000]) for _ in range(400)]
    starts = []
    for cost in costs:
        starts.append(limiter.acquire(cost))
        limiter.release()
    # No sliding minute holds more than the limit, the request that opened it included...
    assert max_in_window(starts, costs, 60.0) <= 60_000 * PACING_HEADROOM
    # ...yet the rate stays close to it (lowered by the largest request per minute: 15%).
    assert sum(costs) / (starts[-1] - starts[0]) * 60 >= 0.8 * 60_000
    # The next start is held back by exactly the previous request's share of that rate.
    rate = 1000 * PACING_HEADROOM - costs[0] / 60
    assert starts[1] - starts[0] == pytest.approx(costs[0] / rate)


def congest(limiter: RateLimiter, clock: VirtualClock, retry_after: float | None) -> int:
    """429s of current requests until the limiter takes them as a lower limit; returns how many."""
    slowdowns = limiter.slowdowns
    for count in range(1, EVIDENCE_ANSWERS + 1):
        limiter.on_rate_limited(retry_after, started=clock.now())
        if limiter.slowdowns > slowdowns:
            return count
    raise AssertionError("a stream of 429s never slowed the limiter down")


def test_a_sporadic_429_delays_only_its_own_batch_and_keeps_the_pace():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=4)
    normal = limiter.request_interval()
    starts = []
    for _ in range(5):
        starts.append(limiter.acquire())
        limiter.release()
        limiter.on_success(starts[-1])
    limiter.on_rate_limited(retry_after=3.0, started=starts[-1])
    starts.append(limiter.acquire())  # the next request (another batch) is not held back
    limiter.release()
    assert starts[-1] - starts[-2] == pytest.approx(normal)
    assert limiter.factor() == 1.0 and limiter.slowdowns == 0 and limiter.rate_limited == 1
    assert limiter.drain_notices() == []


def test_evidence_of_a_lower_limit_pauses_everyone_for_retry_after_and_paces_at_what_was_accepted():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=4)
    full = limiter.request_interval()
    for _ in range(150):  # the server accepted 150 requests in the last minute...
        limiter.on_success(limiter.acquire())
        limiter.release()
    # ...then refused everything: RUN_429S answers in a row is evidence.
    assert congest(limiter, clock, retry_after=3.0) == RUN_429S
    refused_at = clock.now()
    assert limiter.slowdowns == 1
    # 150 accepted in a window: pace at 98% of that (not below half the pace per step).
    assert limiter.factor() == pytest.approx(max(0.5, 0.98 * 150 / (600 * request_headroom(600))))
    first = limiter.acquire()
    limiter.release()
    second = limiter.acquire()
    limiter.release()
    assert first >= refused_at + 3.0  # every request waits the server's Retry-After
    assert second - first == pytest.approx(full / limiter.factor())
    [notice] = limiter.drain_notices()
    assert "real limit is lower than configured" in notice and "Retry-After of 3.0 s" in notice


def test_answers_to_requests_sent_before_a_slow_down_are_not_new_evidence():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=16)
    in_flight = [limiter.acquire() for _ in range(12)]
    congest(limiter, clock, retry_after=None)
    factor = limiter.factor()
    for started in in_flight:  # answered after the slow-down, sent before it
        limiter.on_rate_limited(retry_after=None, started=started)
    assert limiter.factor() == factor and limiter.slowdowns == 1


def test_a_pause_that_begins_during_a_reserved_wait_moves_the_request_after_it():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=60)  # one per ~1.02 s
    limiter.acquire()
    limiter.release()
    original_wait = clock.wait

    def wait_and_get_refused(seconds: float, stop: threading.Event | None) -> bool:
        clock.wait = original_wait
        congest(limiter, clock, retry_after=10.0)  # arrives while this request sleeps
        return original_wait(seconds, stop)

    refused_at = clock.now()
    clock.wait = wait_and_get_refused
    limiter._wait = lambda seconds, stop: clock.wait(seconds, stop)
    start = limiter.acquire()
    assert start >= refused_at + 10.0


def test_unlimited_rates_never_wait_and_evidence_halves_concurrency_until_answers_come_back():
    clock = VirtualClock()
    limiter = limiter_on(clock, max_concurrent=8)
    for _ in range(100):
        limiter.acquire(10_000)
        limiter.release()
    assert clock.now() == 1000.0  # no pacing without limits
    limiter.on_rate_limited(retry_after=None, started=clock.now())
    assert limiter.concurrency() == 8  # one 429 is no evidence...
    assert congest(limiter, clock, retry_after=None) == RUN_429S - 1  # ...RUN_429S in a row are
    assert limiter.concurrency() == 4
    clock.time += 2
    congest(limiter, clock, retry_after=None)
    assert limiter.concurrency() == 2
    for _ in range(3):
        limiter.on_success(clock.now())
    assert limiter.concurrency() == 3  # one more slot per round of answers
    for _ in range(40):
        limiter.on_success(clock.now())
    assert limiter.concurrency() == 8  # additive increase, capped at the configured maximum
    assert limiter.factor() == 1.0 and limiter.slowdowns == 2


def test_concurrency_cap_holds_across_threads():
    limiter = RateLimiter(max_concurrent=3)
    lock = threading.Lock()
    in_flight = peak = 0

    def request() -> None:
        nonlocal in_flight, peak
        limiter.acquire()
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        limiter.release()

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3


def test_a_stop_event_interrupts_a_request_waiting_for_its_turn():
    limiter = RateLimiter(requests_per_minute=1, max_concurrent=1)
    limiter.acquire()
    stop = threading.Event()
    outcome: list[object] = []

    def second() -> None:
        try:
            limiter.acquire(stop=stop)
        except LimiterStopped as error:
            outcome.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and isinstance(outcome[0], LimiterStopped)


def test_backoff_is_exponential_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    rng = random.Random(1)
    for retry in range(1, 10):
        backoff = min(30.0, 0.5 * 2 ** (retry - 1))
        delays = [policy.delay(retry, None, rng) for _ in range(200)]
        assert backoff / 2 <= min(delays) and max(delays) <= backoff
        assert max(delays) - min(delays) > backoff / 4  # jittered, not fixed
    delays = [policy.delay(1, 7.0, rng) for _ in range(200)]
    assert min(delays) >= 7.0 and max(delays) <= 7.7


def test_retry_after_headers_are_parsed_in_every_form():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": when}) <= 30
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_batches_respect_input_and_token_caps_and_loosen_when_usage_says_more():
    rng = random.Random(3)
    alphabet = ["a", "Z", " ", "初", "音", "ミ", "🎵"]
    texts = ["".join(rng.choices(alphabet, k=rng.randint(1, 60))) for _ in range(500)]
    costs = [estimate_tokens(text) for text in texts]
    plan = list(plan_batches(texts, max_inputs=16, max_tokens=300))
    assert plan[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))  # contiguous
    assert plan[-1][1] == len(texts)
    for start, stop, estimated in plan:
        assert stop - start <= 16
        assert estimated == sum(costs[start:stop]) <= 300
    looser = list(plan_batches(texts, max_inputs=16, max_tokens=300, token_scale=lambda: 2.0))
    for start, stop, estimated in looser:
        assert estimated * 2 <= 300 or stop - start == 1
    assert len(looser) > len(plan)
    # A server that counts fewer tokens never makes batches fuller than the estimate allows.
    assert list(plan_batches(texts, 16, 300, token_scale=lambda: 0.5)) == plan
