"""The Batch API of an OpenAI-compatible endpoint: files and batches, each call retried.

The calls are the `openai` client's (`files.create(purpose="batch")`, `batches.create(endpoint=
"/v1/embeddings")`, `batches.retrieve`, `batches.list`, `files.list`, `files.content`,
`files.delete`; never `batches.cancel`: a waiting run gives up, the batch goes on), with the
client's own retries off and the synchronous engine's policy instead: 429, 408, 409, 5xx,
timeouts and connection errors are retried with backoff (Retry-After honoured) within
`max_retries` of the TOML, anything else fails at once. A wait for a batch lasts hours, so a
transient error on one poll must not end it; a broken key or a wrong endpoint must. Creating a
batch is not idempotent: before a retry, `create` looks for a batch the failed try may have made.

The API key is read like the synchronous client's (`resolve_api_key`) and scrubbed from every
error text. Result files are downloaded to a temporary file first, so a download that breaks
half-way is retried from the start and a reader never sees half a file.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

from training_pipeline.core.model_identity import describe_endpoint
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.batch_requests import EMBEDDINGS_URL
from training_pipeline.embedding.clients import resolve_api_key, sdk_client
from training_pipeline.embedding.retry import Failure, RetryPolicy, classify

FILE_TRANSFER_TIMEOUT_SECONDS = 600.0
"""Uploads and downloads of files up to 200 MB take longer than one embeddings request."""
NOT_SUPPORTED_STATUSES = (404, 405, 501)
"""What a server without an optional route (listing files or batches) answers."""

T = TypeVar("T")


class BatchApiError(RuntimeError):
    """A Batch API call failed for good; the message names the call and never holds the key."""

    def __init__(self, message: str, *, status: int | None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def not_supported(self) -> bool:
        return self.status in NOT_SUPPORTED_STATUSES


class BatchClient:
    """One model's Batch API; every method retries transient failures (see module docstring)."""

    def __init__(
        self,
        name: str,
        config: EmbeddingModelConfig,
        *,
        log: Callable[[str], None] = lambda _message: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.endpoint = describe_endpoint(str(config.endpoint))
        self._config = config
        self._api_key = resolve_api_key(name, config)
        self._client = sdk_client(config, self._api_key, max_retries=0)
        self._policy = RetryPolicy(max_retries=config.max_retries)
        self._log = log
        self._sleep = sleep
        self.calls = 0  # HTTP calls made, retries included
        self.retries = 0

    def scrub(self, message: str) -> str:
        """`message` with the API key (if any) blanked out."""
        return message.replace(self._api_key, "***") if self._api_key else message

    def _call(
        self,
        what: str,
        call: Callable[[], T],
        done_meanwhile: Callable[[Failure], T | None] | None = None,
    ) -> T:
        """`call()`, retried per the policy. `done_meanwhile(failure)`, before each retry of a
        call that is not idempotent, returns its result if the failed try took effect anyway."""
        retry = 0
        while True:
            self.calls += 1
            try:
                return call()
            except Exception as error:
                failure = classify(error)
                message = self.scrub(str(error))
                long_wait = (failure.retry_after or 0) > self._policy.max_retry_after
                if not failure.retryable or long_wait or retry >= self._policy.max_retries:
                    raise BatchApiError(
                        f"embedding model {self.name!r} at {self.endpoint}: {what} failed: "
                        f"{failure.kind} after {retry + 1} tries; last error: {message}",
                        status=failure.status,
                    ) from None
                retry += 1
                self.retries += 1
                delay = self._policy.delay(retry, failure.retry_after)
                self._log(
                    f"{self.name}: {what}: {failure.kind}; retry {retry} of "
                    f"{self._policy.max_retries} in {delay:.1f} s"
                )
                self._sleep(delay)
                if done_meanwhile is not None and (result := done_meanwhile(failure)) is not None:
                    return result

    def upload(self, file_name: str, content: bytes) -> str:
        """Upload a batch input file; returns its file id."""
        uploaded = self._call(
            f"uploading {file_name}",
            lambda: self._client.files.create(
                file=(file_name, content, "application/jsonl"),
                purpose="batch",
                timeout=FILE_TRANSFER_TIMEOUT_SECONDS,
            ),
        )
        return uploaded.id

    def find_file(self, file_name: str) -> str | None:
        """The id of an uploaded batch file with this name, if the API has one (newest)."""

        def search() -> str | None:
            found = [
                item
                for item in self._client.files.list(purpose="batch")
                if item.filename == file_name
            ]
            return max(found, key=lambda item: item.created_at).id if found else None

        return self._call(f"looking for the uploaded file {file_name}", search)

    def delete_file(self, file_id: str) -> None:
        self._call(f"deleting file {file_id}", lambda: self._client.files.delete(file_id))

    def create(self, input_file_id: str, metadata: dict[str, str], created_after: float) -> Any:
        """Create an embeddings batch from an uploaded file; returns the batch object.

        A try that timed out or lost its answer may have created the batch, and a second one
        would be paid for again, so before each retry the batches are searched for one of this
        file (`find_batch`, back to `created_after`). An API that cannot list batches is retried
        only after an HTTP error answer (it created nothing); after a lost answer it cannot
        tell, and the call fails."""
        what = f"creating a batch from file {input_file_id}"

        def created_meanwhile(failure: Failure) -> Any | None:
            try:
                return self.find_batch(input_file_id, created_after)
            except BatchApiError as error:
                if not error.not_supported or failure.status is not None:
                    raise
                raise BatchApiError(
                    f"embedding model {self.name!r} at {self.endpoint}: {what} failed "
                    f"({failure.kind}), and the API cannot list batches (HTTP {error.status}) to "
                    "tell whether the batch was created anyway. Creating another could pay for "
                    "its texts twice, so the step stops: the job stays recorded as uploaded; "
                    "see the README (Batch mode) for what the next run does",
                    status=error.status,
                ) from None

        return self._call(
            what,
            lambda: self._client.batches.create(
                input_file_id=input_file_id,
                endpoint=EMBEDDINGS_URL,
                completion_window=self._config.batch_completion_window,  # type: ignore[arg-type]
                metadata=metadata,
            ),
            created_meanwhile,
        )

    def find_batch(self, input_file_id: str, created_after: float) -> Any | None:
        """The batch created from `input_file_id`, if any; batches are listed newest first and
        the search stops at those created before `created_after` (Unix seconds)."""

        def search() -> Any | None:
            for batch in self._client.batches.list(limit=100):
                if batch.input_file_id == input_file_id:
                    return batch
                if batch.created_at < created_after:
                    return None
            return None

        return self._call(f"looking for a batch of file {input_file_id}", search)

    def retrieve(self, batch_id: str) -> Any:
        return self._call(
            f"polling batch {batch_id}", lambda: self._client.batches.retrieve(batch_id)
        )

    @contextmanager
    def download(self, file_id: str) -> Iterator[IO[bytes]]:
        """A result file's content as a temporary binary file, positioned at its start."""
        with tempfile.TemporaryFile(prefix="training_pipeline-batch-") as local:

            def fetch() -> None:
                import openai

                local.seek(0)
                local.truncate()
                with self._client.files.with_streaming_response.content(
                    file_id, timeout=FILE_TRANSFER_TIMEOUT_SECONDS
                ) as response:
                    try:
                        for chunk in response.iter_bytes():
                            local.write(chunk)
                    except Exception as error:  # the transport's own error, mid-body
                        raise openai.APIConnectionError(
                            message=f"the download broke off: {error}",
                            request=response.http_response.request,
                        ) from error

            self._call(f"downloading file {file_id}", fetch)
            local.seek(0)
            yield local
