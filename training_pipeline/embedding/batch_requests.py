"""The input files of a Batch API: one JSONL request line per text, cut to the file limits.

Each line asks `/v1/embeddings` for one text, with `custom_id` = the text's checksum (the cache
key), and the same body a synchronous request of this model sends (model, base64 encoding,
`dimensions` if configured, `extra_body`), so a batch answers with the vectors a synchronous
call would have given. One text per line, not a list of texts per line: a failed or invalid line
then costs one text, not a whole request's worth, and its `custom_id` names exactly one cache row.
OpenAI also caps an embeddings batch at 50,000 inputs across all its lines, the same number as
its 50,000 lines per file, so lists would buy nothing there.

Files are cut so that none has more than `batch_max_requests_per_file` lines or
`batch_max_file_bytes` bytes (the TOML's limits of the endpoint).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from training_pipeline.core.models_config import EmbeddingModelConfig

EMBEDDINGS_URL = "/v1/embeddings"


def request_body(model_name: str, config: EmbeddingModelConfig, text: str) -> dict[str, object]:
    """The body of one embeddings request, as the synchronous client sends it."""
    body: dict[str, object] = {
        "model": config.api_model or model_name,
        "input": text,
        "encoding_format": "base64",
    }
    if config.send_dimensions:
        body["dimensions"] = config.dimensions
    body.update(config.extra_body)
    return body


def request_line(model_name: str, config: EmbeddingModelConfig, checksum: str, text: str) -> bytes:
    """One JSONL line (with its newline) of a batch input file."""
    line = {
        "custom_id": checksum,
        "method": "POST",
        "url": EMBEDDINGS_URL,
        "body": request_body(model_name, config, text),
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class InputFile:
    """The contents of one input file and the checksums of its lines, in line order."""

    checksums: list[str]
    content: bytes


def plan_input_files(
    model_name: str,
    config: EmbeddingModelConfig,
    checksums: Sequence[str],
    texts: Sequence[str],
) -> Iterator[InputFile]:
    """Request lines for every (checksum, text), cut into files within the model's limits.

    Raises `ValueError` if a single line is larger than `batch_max_file_bytes` (it could never be
    sent in a batch).
    """
    max_lines = config.batch_max_requests_per_file
    max_bytes = config.batch_max_file_bytes
    lines: list[bytes] = []
    line_checksums: list[str] = []
    size = 0
    for checksum, text in zip(checksums, texts, strict=True):
        line = request_line(model_name, config, checksum, text)
        if len(line) > max_bytes:
            raise ValueError(
                f"the batch request of text {checksum} is {len(line)} bytes, more than "
                f"batch_max_file_bytes = {max_bytes}"
            )
        if lines and (len(lines) >= max_lines or size + len(line) > max_bytes):
            yield InputFile(line_checksums, b"".join(lines))
            lines, line_checksums, size = [], [], 0
        lines.append(line)
        line_checksums.append(checksum)
        size += len(line)
    if lines:
        yield InputFile(line_checksums, b"".join(lines))
