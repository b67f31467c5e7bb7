"""When 429s slow the limiter down: sporadic ones never do, a lower real limit does, and the
pace comes back once the 429s stop.

Everything runs on a virtual clock against simulated servers (a seeded random 429 share, a
sliding-window limit), one request at a time and answered at once, so every number is exact
and instant: these are assertions about the policy, not about speed. The same two servers over
real HTTP, with real concurrency and latency, are in `make bench BENCH=embedding`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

import pytest

from training_pipeline.embedding.congestion import (
    CONGESTED_SHARE,
    MAX_PROBE_WAIT_WINDOWS,
    MIN_429S,
    PROBE_STEP,
    CongestionControl,
)
from training_pipeline.embedding.rate_limit import PACING_HEADROOM, RateLimiter
from training_pipeline_tests.unit.embedding.test_rate_limit import VirtualClock, limiter_on

Server = Callable[[float], float | None]
"""`server(start)`: None if the request is accepted, else the Retry-After of its 429."""


def random_429s(share: float, seed: int, retry_after: float = 1.0) -> Server:
    rng = random.Random(seed)
    return lambda _start: retry_after if rng.random() < share else None


def sliding_window(limit: int, window: float = 60.0) -> Server:
    """Accepts at most `limit` requests per sliding `window`; refused ones do not count."""
    accepted: deque[float] = deque()

    def answer(start: float) -> float | None:
        while accepted and accepted[0] <= start - window:
            accepted.popleft()
        if len(accepted) >= limit:
            return accepted[0] + window - start
        accepted.append(start)
        return None

    return answer


def simulate(
    limiter: RateLimiter, clock: VirtualClock, server: Server, minutes: float
) -> list[tuple[float, bool]]:
    """Requests through `limiter` for `minutes` virtual minutes: (start, answered 429) each."""
    outcomes = []
    end = clock.now() + 60.0 * minutes
    while clock.now() < end:
        start = limiter.acquire()
        retry_after = server(start)
        if retry_after is None:
            limiter.on_success(start)
        else:
            limiter.on_rate_limited(retry_after, start)
        limiter.release()
        outcomes.append((start, retry_after is not None))
    return outcomes


def between(outcomes: list[tuple[float, bool]], first: float, last: float) -> tuple[int, int]:
    """(requests, 429s) that started in [first, last)."""
    chosen = [refused for start, refused in outcomes if first <= start < last]
    return len(chosen), sum(chosen)


def test_five_percent_random_429s_never_slow_the_pace_down():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=8)
    t0 = clock.now()
    outcomes = simulate(limiter, clock, random_429s(0.05, seed=11), minutes=5)
    requests, refused = between(outcomes, t0, t0 + 300)
    assert 0.04 * requests < refused < 0.06 * requests  # the server did refuse 5%
    assert limiter.slowdowns == 0 and limiter.factor() == 1.0
    assert requests >= 0.97 * 600 * 5  # the full pace (98% of the limit) the whole time


def test_the_congestion_test_rarely_mistakes_five_percent_random_429s_for_a_limit():
    # 40 runs of 3,000 answers each (5 minutes at 600/min), different seeds.
    mistaken = 0
    for seed in range(40):
        control = CongestionControl(window_seconds=60.0)
        rng = random.Random(seed)
        for number in range(3000):
            now = number * 0.1
            control.on_answer(now, now, rng.random() < 0.05, full_request_rate=9.8)
        mistaken += control.slowdowns > 0
    assert mistaken <= 1


def test_429s_spread_out_are_evidence_by_their_share_of_recent_answers():
    control = CongestionControl(window_seconds=60.0)
    now = 0.0
    for number in range(200):  # every fourth answer a 429: never RUN_429S in a row
        change = control.on_answer(now, now, number % 4 == 3, full_request_rate=9.8)
        now += 0.1
        if change is not None:
            break
    assert change is not None and change.reason == "congestion"
    # MIN_429S of 4 * MIN_429S answers: 25%, over CONGESTED_SHARE.
    assert number + 1 == 4 * MIN_429S and CONGESTED_SHARE < 0.25
    assert change.evidence == f"{MIN_429S} of the last {4 * MIN_429S} answers were 429"


def test_a_server_at_half_the_configured_limit_is_found_and_held_with_few_429s():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=8)
    t0 = clock.now()
    outcomes = simulate(limiter, clock, sliding_window(300), minutes=8)
    requests, refused = between(outcomes, t0 + 60, t0 + 480)
    accepted_per_minute = (requests - refused) / 7
    assert accepted_per_minute >= 0.9 * 300  # converged to the real limit...
    assert refused <= 0.05 * requests  # ...with at most 5% of requests refused after a minute
    assert limiter.slowdowns >= 1
    # The pace sits at the learned limit: 98% of what the server accepted, about half.
    assert 0.45 <= limiter.factor() <= 0.56


def test_the_pace_climbs_back_to_the_configured_rate_once_the_limit_is_lifted():
    clock = VirtualClock()
    limiter = limiter_on(clock, requests_per_minute=600, max_concurrent=8)
    simulate(limiter, clock, sliding_window(300), minutes=2)
    assert limiter.factor() < 0.6
    minutes = 0
    while limiter.factor() < 1.0:  # the quota is back
        simulate(limiter, clock, lambda _start: None, minutes=1)
        minutes += 1
    # Probes of 5%, 10%, 20%, 40%, 50% of the pace, each passing after a window: from half
    # to the full configured pace within six minutes (here four: the first probe had begun).
    assert minutes <= 6
    notices = limiter.drain_notices()
    assert "pacing up to 345 requests/min" in notices[-4]  # +10% of 314
    assert "pacing up to 414 requests/min" in notices[-3]  # +20%
    assert "pacing up to 580 requests/min" in notices[-2]  # +40%
    assert "pacing up to 598 requests/min (100%" in notices[-1]  # +50%, capped


def test_a_probe_above_the_real_limit_fails_fast_and_the_next_waits_twice_as_long():
    control = CongestionControl(window_seconds=60.0)
    now = 0.0
    rate = 9.8  # the full pace, requests/s
    for _ in range(600):  # a full minute accepted at the full pace...
        control.on_answer(now, now, False, full_request_rate=rate)
        now += 1 / rate
    while control.slowdowns == 0:  # ...then refused: congestion
        control.on_answer(now, now, True, full_request_rate=rate)
        now += 1 / rate
    stable = control.factor
    assert stable == pytest.approx(0.9)  # 600 accepted: at most a 10% cut per step
    change = None
    while change is None:  # a clean window at the lowered pace, then a probe
        change = control.on_answer(now, now, False, full_request_rate=rate)
        now += 1 / (rate * control.factor)
    assert now - control.changed_at < 1 and control.probing
    assert control.factor == pytest.approx(stable * (1 + PROBE_STEP))
    assert change is not None and change.reason == "probe"
    refusals = 0
    while control.probing:  # the probe draws 429s: back to the stable pace
        refusals += 1
        change = control.on_answer(now, now, True, full_request_rate=rate)
        now += 0.1
    assert refusals == 3 and change.reason == "probe failed" and change.pause_everyone
    assert control.factor == stable and control.probe_wait == 120.0
    for failed in range(2, 6):  # probe waits double, to at most MAX_PROBE_WAIT_WINDOWS windows
        control._start_probe(now, "probe")
        for _ in range(3):
            control.on_answer(now, now, True, full_request_rate=rate)
        assert control.probe_wait == min(60.0 * 2**failed, MAX_PROBE_WAIT_WINDOWS * 60.0)


def test_tokens_per_minute_below_the_configured_one_is_learned_from_accepted_tokens():
    clock = VirtualClock()
    limiter = RateLimiter(tokens_per_minute=60_000, clock=clock.now, wait=clock.wait)
    accepted_tokens = 0
    for _ in range(30):  # 30 requests of 1,000 tokens accepted in the window: 30,000 tokens
        started = limiter.acquire(1_000)
        limiter.on_success(started, 1_000)
        accepted_tokens += 1_000
    while limiter.slowdowns == 0:
        limiter.on_rate_limited(None, limiter.acquire(1_000))
    full_rate = (60_000 / 60 * PACING_HEADROOM - 1_000 / 60) * 60  # per window, largest held back
    assert limiter.factor() == pytest.approx(max(0.5, 0.98 * accepted_tokens / full_rate))
