"""Batch input and result lines: files cut to the endpoint's limits with one text per line and the
synchronous request body, and every result line validated like a synchronous answer."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.batch_requests import plan_input_files, request_body
from training_pipeline.embedding.batch_results import ResultReader

DIMENSIONS = 4


def model(**fields: object) -> EmbeddingModelConfig:
    return EmbeddingModelConfig(
        type="openai",
        endpoint="http://127.0.0.1:9/v1",
        dimensions=DIMENSIONS,
        batch_supported=True,
        **fields,
    )


def answer(custom_id: str, vector: list[float] | str, tokens: int | None = 3) -> str:
    body: dict = {"object": "list", "data": [{"index": 0, "embedding": vector}]}
    if tokens is not None:
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    line = {"custom_id": custom_id, "response": {"status_code": 200, "body": body}, "error": None}
    return json.dumps(line)


def test_one_line_per_text_with_the_synchronous_body_and_the_checksum_as_custom_id():
    config = model(api_model="emb-v3", send_dimensions=True, extra_body={"user": "pipeline"})
    (planned,) = plan_input_files("remote", config, ["c1", "c2"], ["first", "第二"])
    lines = [json.loads(line) for line in planned.content.splitlines()]
    assert planned.checksums == ["c1", "c2"]
    assert [line["custom_id"] for line in lines] == ["c1", "c2"]
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/embeddings")}
    assert lines[1]["body"] == {
        "model": "emb-v3",
        "input": "第二",
        "encoding_format": "base64",
        "dimensions": DIMENSIONS,
        "user": "pipeline",
    }
    assert request_body("remote", model(), "x") == {
        "model": "remote",
        "input": "x",
        "encoding_format": "base64",
    }


def test_files_are_cut_at_the_line_and_byte_limits():
    checksums = [f"c{n:02d}" for n in range(10)]
    texts = [f"text {n}" for n in range(10)]
    by_lines = list(plan_input_files("m", model(batch_max_requests_per_file=4), checksums, texts))
    assert [len(f.checksums) for f in by_lines] == [4, 4, 2]
    assert [c for f in by_lines for c in f.checksums] == checksums

    line_bytes = len(next(plan_input_files("m", model(), checksums[:1], texts[:1])).content)
    by_bytes = model(batch_max_file_bytes=3 * line_bytes)
    files = list(plan_input_files("m", by_bytes, checksums, texts))
    assert all(len(f.content) <= 3 * line_bytes for f in files)
    assert [len(f.checksums) for f in files] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="batch_max_file_bytes"):
        too_small = model(batch_max_file_bytes=line_bytes - 1)
        list(plan_input_files("m", too_small, checksums[:1], texts[:1]))


def test_only_valid_vectors_of_known_texts_count_and_every_other_text_gets_a_reason():
    checksums = ["ok", "b64", "zero", "nan", "short", "dup", "err", "http", "lost"]
    reader = ResultReader(checksums, [10] * len(checksums), DIMENSIONS)
    good = [0.5, 0.5, 0.5, 0.5]
    b64 = base64.b64encode(np.array([1, 0, 0, 0], "<f4").tobytes()).decode()
    error_line = {"custom_id": "err", "response": None, "error": {"code": "e1", "message": "m"}}
    http_line = {"custom_id": "http", "response": {"status_code": 500, "body": {}}, "error": None}
    reader.read(
        [
            answer("ok", good),
            answer("b64", b64, tokens=None),  # no usage: our estimate counts
            answer("zero", [0.0] * DIMENSIONS),
            answer("nan", [float("nan"), *good[1:]]),
            answer("short", good[:-1]),
            answer("dup", good),
            answer("dup", good),
            answer("never-sent", good),
            "not json",
            "",
        ]
    )
    reader.read([json.dumps(error_line), json.dumps(http_line)])  # the error file
    lines = reader.finish()

    assert lines.stored_checksums == ["ok", "b64"]
    np.testing.assert_array_equal(lines.vectors[1], [1, 0, 0, 0])
    assert {c: r.split(":")[0] for c, r in lines.failures.items()} == {
        "zero": "invalid vector",
        "nan": "invalid vector",
        "short": "invalid vector",
        "dup": "duplicate custom_id",
        "err": "error",
        "http": "error",
        "lost": "lost",
    }
    assert lines.failures["err"] == "error: e1: m" and lines.failures["http"] == "error: HTTP 500"
    assert (lines.unknown_lines, lines.unparsable_lines) == (1, 1)
    # Billed: the HTTP 200 answer of each request, once per text (a repeated line is not billed).
    assert lines.billed_lines == 6
    assert (lines.tokens_reported, lines.tokens_estimated) == (5 * 3, 10)
    assert sum(lines.failed_by_cause.values()) == len(lines.failures)
