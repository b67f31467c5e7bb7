"""When 429 answers mean "the server's real limit is lower than configured", and what to do then.

Why this exists: a server can answer 429 for two very different reasons. Sporadically (a busy
replica, a shared quota blip), while the client stays well under the limit: the request that got
it waits its Retry-After and is retried, and slowing everyone down only wastes the quota (with
5% of answers a 429, halving the rate on each one kept a client at 22% of its allowed rate). Or
because the real limit is lower than the TOML says: then every request above it is refused, and
only pacing lower helps. The two are told apart by evidence, not by a single answer:

- **Congestion**: `RUN_429S` answers in a row are 429 (429s clustering: a full window refuses
  every request until it frees, so all requests in flight are refused together), or among the
  last `EVIDENCE_ANSWERS` answers at least `CONGESTED_SHARE` (and at least `MIN_429S`) are
  429 (a limit a little below the pace refuses a share of requests, spread out). Only answers
  to requests sent at the current pace count. Random 429s at 5% almost never do either (five
  in a row: about once in 3 million answers; the share: see the unit tests), while a limit at
  half the configured rate shows within a second of its window filling up. The run needs
  `RUN_429S` requests in flight; with fewer, all of them are refused, wait their Retry-After
  and nothing more is sent meanwhile, which paces the client to the limit by itself.
  The new pace is learned from the server itself: the requests (and tokens) it accepted over
  the last `window_seconds` are what its limit lets through in a window, so the limiter paces at
  `LEARNED_HEADROOM` of that, within `[MAX_DECREASE, MIN_DECREASE]` times the current pace (a
  server that refuses everything still only halves it per step; one with a burst allowance
  cannot leave the pace unchanged).
- **Probing back up**: after a window (`window_seconds`) without congestion at a lowered pace,
  the pace goes up by `PROBE_STEP` of itself for one window. A window is what a sliding-window
  server needs to show an overshoot. Each probe that passes doubles the next step (the pace
  climbs back quickly once 429s stop); a probe fails as soon as the 429 share of its recent
  answers exceeds the share seen at the stable pace before it by `PROBE_MARGIN` (so sporadic
  429s alone do not fail it), and then the pace goes straight back to the stable one and the
  next probe waits twice as long (at most `MAX_PROBE_WAIT_WINDOWS` windows).

Answers to requests that started before the last change of pace are not evidence about the new
pace and are ignored (they were sent at the old one). The pace never exceeds the configured
limits (factor <= 1) and never falls below `MIN_FACTOR` of them.

This module is pure: it is fed answers with their times and returns decisions; the limiter
holds the lock and the clock, and pauses requests when a decision says so.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RUN_429S = 5
"""429s in a row (no answer with vectors between them) that mean a full window."""
EVIDENCE_ANSWERS = 100
"""Recent answers (at the current pace) the congestion test looks at."""
CONGESTED_SHARE = 0.2
"""Share of 429s among the recent answers that means the real limit is lower."""
MIN_429S = 8
"""Fewest 429s that can mean congestion (early in a run, when fewer answers are in)."""
LEARNED_HEADROOM = 0.98
"""Share of the rate the server accepted that the limiter paces at after congestion."""
MAX_DECREASE = 0.5
"""One congestion step lowers the pace to at least this share of the current one..."""
MIN_DECREASE = 0.9
"""...and to at most this share."""
MIN_FACTOR = 0.05
"""The pace never drops below this share of the configured limits."""
PROBE_STEP = 0.05
"""The first probe after a slow-down raises the pace by this share of the stable pace."""
MAX_PROBE_STEP = 0.5
"""Probe steps double while probes pass, up to this share."""
PROBE_MARGIN = 0.03
"""A probe fails when its 429 share exceeds the stable pace's share by this much..."""
PROBE_MIN_429S = 3
"""...with at least this many 429s."""
MAX_PROBE_WAIT_WINDOWS = 8
"""After failed probes the next one waits twice as long, up to this many windows."""


@dataclass(frozen=True)
class PaceChange:
    """A decision: pace at `factor` of the configured limits from now on."""

    factor: float
    reason: str  # "congestion", "probe failed", "probe" (started), "probe passed"
    pause_everyone: bool  # honour the 429's Retry-After for every request (evidence of a limit)
    evidence: str  # the answers that led to the decision, for the run log


class CongestionControl:
    """The pace (a factor of the configured limits) learned from 429s and accepted requests."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.factor = 1.0
        self.stable_factor = 1.0  # the pace last seen to cause no congestion
        self.probing = False
        self.probe_step = PROBE_STEP
        self.probe_wait = window_seconds
        self.background_share = 0.0  # 429 share at the stable pace, before the current probe
        self.changed_at = float("-inf")
        self.slowdowns = 0
        self._recent: deque[bool] = deque(maxlen=EVIDENCE_ANSWERS)
        self._recent_429s = 0
        self._run_429s = 0  # 429s in a row, at the current pace
        self._period_answers = 0  # since the last change of pace
        self._period_429s = 0
        self._accepted: deque[tuple[float, int]] = deque()  # (start, tokens) in the last window
        self._accepted_requests = 0
        self._accepted_tokens = 0

    # -- evidence --------------------------------------------------------------------------------

    def on_answer(
        self,
        now: float,
        started: float | None,
        rate_limited: bool,
        tokens: int = 1,
        *,
        full_request_rate: float | None = None,
        full_token_rate: float | None = None,
    ) -> PaceChange | None:
        """Record one answer; return a change of pace if the evidence now calls for one.

        `started`: when the answered request left (None: unknown, counted as current);
        `full_*_rate`: the limiter's paced rates per second at factor 1, to turn the accepted
        requests and tokens of the last window into a factor.
        """
        if not rate_limited:
            self._remember_accepted(now, started if started is not None else now, tokens)
        if started is not None and started < self.changed_at:
            return None  # sent at the previous pace: says nothing about this one
        self._period_answers += 1
        self._period_429s += rate_limited
        if len(self._recent) == self._recent.maxlen:
            self._recent_429s -= self._recent[0]
        self._recent.append(rate_limited)
        self._recent_429s += rate_limited
        self._run_429s = self._run_429s + 1 if rate_limited else 0

        if self.probing and self._probe_failed():
            return self._back_to_stable(now)
        if self._congested():
            return self._slow_down(now, full_request_rate, full_token_rate)
        if self.probing and now - self.changed_at >= self.window_seconds:
            return self._probe_passed(now)
        if not self.probing and self.factor < 1.0 and now - self.changed_at >= self.probe_wait:
            return self._start_probe(now, "probe")
        return None

    def _congested(self) -> bool:
        count = self._recent_429s
        share = count >= MIN_429S and count >= CONGESTED_SHARE * len(self._recent)
        return share or self._run_429s >= RUN_429S

    def _evidence(self) -> str:
        if self._run_429s >= RUN_429S:
            return f"{self._run_429s} answers in a row were 429"
        return f"{self._recent_429s} of the last {len(self._recent)} answers were 429"

    def _probe_failed(self) -> bool:
        count = self._recent_429s
        allowed = (self.background_share + PROBE_MARGIN) * len(self._recent)
        return count >= PROBE_MIN_429S and count > allowed

    def _period_share(self) -> float:
        return self._period_429s / self._period_answers if self._period_answers else 0.0

    def _remember_accepted(self, now: float, started: float, tokens: int) -> None:
        self._accepted.append((started, tokens))
        self._accepted_requests += 1
        self._accepted_tokens += tokens
        horizon = now - self.window_seconds
        while self._accepted and self._accepted[0][0] < horizon:
            _, old_tokens = self._accepted.popleft()
            self._accepted_requests -= 1
            self._accepted_tokens -= old_tokens

    def accepted_factor(
        self, full_request_rate: float | None, full_token_rate: float | None
    ) -> float | None:
        """What the server accepted over the last window, as a factor of the full pace.

        The largest over the configured limits: the one nearest to full is the binding one.
        None without configured rates.
        """
        shares = []
        if full_request_rate:
            shares.append(self._accepted_requests / (full_request_rate * self.window_seconds))
        if full_token_rate:
            shares.append(self._accepted_tokens / (full_token_rate * self.window_seconds))
        return max(shares) if shares else None

    # -- decisions -------------------------------------------------------------------------------

    def _change(self, now: float, factor: float) -> None:
        self.factor = factor
        self.changed_at = now
        self._period_answers = self._period_429s = 0
        self._recent.clear()
        self._recent_429s = self._run_429s = 0

    def _slow_down(
        self, now: float, full_request_rate: float | None, full_token_rate: float | None
    ) -> PaceChange:
        evidence = self._evidence()
        self.slowdowns += 1
        learned = self.accepted_factor(full_request_rate, full_token_rate)
        if learned is None:  # no configured rate to lower: the limiter halves its concurrency
            self._change(now, 1.0)
            return PaceChange(1.0, "congestion", pause_everyone=True, evidence=evidence)
        current = self.factor
        wanted = LEARNED_HEADROOM * learned
        new = max(MIN_FACTOR, min(current * MIN_DECREASE, max(current * MAX_DECREASE, wanted)))
        self.stable_factor = new
        self.probing = False
        self.probe_step = PROBE_STEP
        self.probe_wait = self.window_seconds
        self._change(now, new)
        return PaceChange(new, "congestion", pause_everyone=True, evidence=evidence)

    def _back_to_stable(self, now: float) -> PaceChange:
        evidence = (
            f"{self._recent_429s} of its {len(self._recent)} answers were 429, against "
            f"{100 * self.background_share:.0f}% before"
        )
        self.slowdowns += 1
        self.probing = False
        self.probe_step = PROBE_STEP
        self.probe_wait = min(self.probe_wait * 2, MAX_PROBE_WAIT_WINDOWS * self.window_seconds)
        self._change(now, self.stable_factor)
        return PaceChange(self.factor, "probe failed", pause_everyone=True, evidence=evidence)

    def _start_probe(self, now: float, reason: str) -> PaceChange:
        self.background_share = self._period_share()
        self.probing = True
        evidence = f"{self._period_429s} of {self._period_answers} answers were 429"
        self._change(now, min(1.0, self.stable_factor * (1.0 + self.probe_step)))
        return PaceChange(self.factor, reason, pause_everyone=False, evidence=evidence)

    def _probe_passed(self, now: float) -> PaceChange:
        self.stable_factor = self.factor
        self.probing = False
        self.probe_step = min(MAX_PROBE_STEP, self.probe_step * 2)
        self.probe_wait = self.window_seconds
        if self.factor < 1.0:
            return self._start_probe(now, "probe passed")
        evidence = f"{self._period_429s} of {self._period_answers} answers were 429"
        self._change(now, 1.0)
        return PaceChange(1.0, "probe passed", pause_everyone=False, evidence=evidence)
