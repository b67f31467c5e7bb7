"""A finished batch's output and error files, read line by line and validated like a synchronous
answer before anything is stored.

A line yields a vector only if its `custom_id` is one of the job's checksums and appears once in
both files together, its response is HTTP 200 without an error, and its body holds exactly one
embedding (index 0) of the configured size, finite and not all zero (`validation.py`, the
synchronous checks). Everything else is a failed text with its reason, to be retried:

- `error`: a line of the error file, or a non-200 response or an `error` in the output file;
- `invalid vector`: an answer that fails the synchronous validation;
- `duplicate custom_id`: two lines for one text (neither is trusted);
- `lost`: a text of the job without any line (OpenAI leaves out the unfinished requests of an
  expired or cancelled batch; a faulty server may lose lines of a completed one).

Lines whose `custom_id` is not a text of this job, and lines that are not JSON, are refused and
counted (`unknown_lines`, `unparsable_lines`). Tokens are what was billed: the HTTP 200 answer
to each request we sent (one per text; a repeated line is not a second request), valid or not,
counted by its `usage` when the API reports it, else by our estimate of its text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from training_pipeline.embedding.clients import decode_embedding
from training_pipeline.embedding.validation import (
    InvalidEmbeddingResponse,
    validate_vectors,
    vectors_from_indexed_items,
)

ERROR = "error"
INVALID_VECTOR = "invalid vector"
DUPLICATE = "duplicate custom_id"
LOST = "lost"


@dataclass
class CollectedLines:
    """What a job's result files gave: a vector per valid text, a reason per failed one."""

    checksums: list[str]
    vectors: np.ndarray  # (len(checksums), dimensions); rows where `valid` is False are garbage
    valid: np.ndarray  # bool per checksum
    failures: dict[str, str] = field(default_factory=dict)  # checksum -> reason
    failed_by_cause: Counter = field(default_factory=Counter)  # texts per cause (ERROR, ...)
    unknown_lines: int = 0
    unparsable_lines: int = 0
    billed_lines: int = 0  # texts answered with HTTP 200, valid or not: what the API charges
    tokens_reported: int = 0  # tokens of billed lines whose `usage` the API reported
    tokens_estimated: int = 0  # our estimate for billed lines without `usage`

    @property
    def tokens(self) -> int:
        return self.tokens_reported + self.tokens_estimated

    @property
    def stored_checksums(self) -> list[str]:
        return [checksum for checksum, ok in zip(self.checksums, self.valid, strict=True) if ok]


class ResultReader:
    """Reads the output and error files of one job (in any order), then `finish()`."""

    def __init__(
        self, checksums: Sequence[str], estimated_tokens: Sequence[int], dimensions: int
    ) -> None:
        self._row = {checksum: row for row, checksum in enumerate(checksums)}
        if len(self._row) != len(checksums):
            raise ValueError("a job's checksums must be distinct")
        self._estimates = list(estimated_tokens)
        self._dimensions = dimensions
        self._seen: Counter = Counter()
        self._collected = CollectedLines(
            checksums=list(checksums),
            vectors=np.zeros((len(checksums), dimensions), np.float32),
            valid=np.zeros(len(checksums), dtype=bool),
        )

    def read(self, lines: Iterable[str | bytes]) -> None:
        """Read the lines of an output or error file (both have the same line format)."""
        for line in lines:
            if line.strip():
                self._read_line(line)

    def _fail(self, checksum: str, cause: str, detail: str) -> None:
        row = self._row[checksum]
        self._collected.valid[row] = False
        self._collected.failures[checksum] = f"{cause}: {detail}" if detail else cause

    def _read_line(self, line: str | bytes) -> None:
        collected = self._collected
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            collected.unparsable_lines += 1
            return
        if not isinstance(record, dict):
            collected.unparsable_lines += 1
            return
        checksum = record.get("custom_id")
        response = record.get("response") if isinstance(record.get("response"), dict) else None
        body = response.get("body") if response and isinstance(response.get("body"), dict) else {}
        billed = response is not None and response.get("status_code") == 200
        if not isinstance(checksum, str) or checksum not in self._row:
            collected.unknown_lines += 1  # not a request we sent: not one we pay for
            return
        self._seen[checksum] += 1
        if billed and self._seen[checksum] == 1:  # one request per text: one answer billed
            collected.billed_lines += 1
            self._count_tokens(body, checksum)
        if self._seen[checksum] > 1:
            self._fail(checksum, DUPLICATE, f"{self._seen[checksum]} lines")
            return
        error = record.get("error")
        if error or not billed:
            self._fail(checksum, ERROR, _describe_error(error, response))
            return
        try:
            vector = _one_vector(body, self._dimensions)
        except InvalidEmbeddingResponse as invalid:
            self._fail(checksum, INVALID_VECTOR, str(invalid))
            return
        row = self._row[checksum]
        collected.vectors[row] = vector
        collected.valid[row] = True

    def _count_tokens(self, body: dict, checksum: str) -> None:
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tokens = usage.get("total_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
            self._collected.tokens_reported += tokens
        else:
            self._collected.tokens_estimated += self._estimates[self._row[checksum]]

    def finish(self) -> CollectedLines:
        """The results, with every text of the job that had no line marked `lost`."""
        collected = self._collected
        for checksum in collected.checksums:
            if self._seen[checksum] == 0:
                self._fail(checksum, LOST, "no line in the output or error file")
        for reason in collected.failures.values():
            collected.failed_by_cause[reason.split(":", 1)[0]] += 1
        return collected


def _one_vector(body: dict, dimensions: int) -> np.ndarray:
    data = body.get("data")
    if not isinstance(data, list):
        raise InvalidEmbeddingResponse("the answer has no 'data' list of embeddings")
    items = [
        (item.get("index"), decode_embedding(item.get("embedding")))
        for item in data
        if isinstance(item, dict)
    ]
    if len(items) != len(data):
        raise InvalidEmbeddingResponse("answer items that are not objects")
    return validate_vectors(vectors_from_indexed_items(items, 1), 1, dimensions)[0]


def _describe_error(error: object, response: dict | None) -> str:
    """`code: message` of an error line, or the HTTP status of a failed response."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return ": ".join(str(part) for part in (code, message) if part) or "unspecified error"
    if response is None:
        return "neither a response nor an error"
    body_error = (response.get("body") or {}).get("error") if isinstance(response, dict) else None
    message = body_error.get("message") if isinstance(body_error, dict) else None
    status = response.get("status_code")
    return f"HTTP {status}" + (f": {message}" if message else "")
