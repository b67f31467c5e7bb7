# Over 300 lines: one simulated Batch API (files, batches, their lifecycle and faults) whose
# routes share the server's state.
"""A simulated OpenAI-compatible Batch API on loopback, for tests and benchmarks.

It is the fault-injecting embeddings server (`embedding_server.EmbeddingServer`, which keeps
answering `POST /v1/embeddings` synchronously, with the same synthetic vectors and token counts)
plus the routes of OpenAI's Batch API, spoken over real HTTP so that the real `openai` client
talks to it:

- `POST /v1/files` (multipart, `purpose=batch`), `GET /v1/files[?purpose=]`, `GET
  /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`;
- `POST /v1/batches`, `GET /v1/batches` (newest first), `GET /v1/batches/{id}`, `POST
  /v1/batches/{id}/cancel`.

A batch moves one status per retrieve: `validating`, `in_progress`, `finalizing`, `completed`
(or `failed` after `validating`, `expired` or `cancelled` after `in_progress`), unless the test
`hold()`s batches in `in_progress` until `release()`. Its results are computed when it ends.
Faults are queued per batch (`queue_faults(BatchFaults(...))`, taken by the next batch created):
lost output lines, bad vectors (zero, NaN, wrong size), duplicate and unknown `custom_id`s,
error-file lines, expiry with partial output, a failed (refused) batch. `fail_calls` makes the
next Batch API calls answer an HTTP error (a transient outage).

It counts what a provider would bill (`billed`: texts of HTTP 200 output lines, valid or not,
and `billed_tokens`) and what it was asked (`batch_texts`: the texts of every batch created), so
tests can assert that every text was paid for exactly once. `on_upload` / `on_batch_created`
run before the answer is sent (a test kills the client there); `drop_create_answers` makes
the next creates drop the connection instead of answering (the batch exists all the same).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from training_pipeline_tests.support.embedding_server import (
    EmbeddingServer,
    _Handler,
    encode,
    server_token_count,
    serving,
    synthetic_vector,
)

EMBEDDINGS_ENDPOINT = "/v1/embeddings"


@dataclass
class BatchFaults:
    """What goes wrong with one batch. Faults hit lines in input order: the first `lost` lines
    are lost, the next `zero`, `nan`, `wrong_size` get bad vectors, the next `error_lines` go to
    the error file; `duplicate` of the valid lines are written twice; `unknown` extra lines carry
    custom_ids that were never sent. `expire_after`: the batch expires with only that many lines
    processed; `cancel_after`: if it is cancelled, that many lines were processed before the
    cancellation took effect. `fail`: validation refuses the file."""

    lost: int = 0
    zero: int = 0
    nan: int = 0
    wrong_size: int = 0
    error_lines: int = 0
    duplicate: int = 0
    unknown: int = 0
    expire_after: int | None = None
    cancel_after: int = 0
    fail: bool = False


@dataclass
class SimFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class SimBatch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict
    requests: list[dict]  # the input lines
    faults: BatchFaults
    created_at: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    cancel_requested: bool = False
    affected: dict[str, list[str]] = field(default_factory=dict)  # fault kind -> custom_ids

    def as_json(self) -> dict:
        validated = self.status != "validating"
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": EMBEDDINGS_ENDPOINT,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86_400,
            "request_counts": {
                "total": len(self.requests) if validated else 0,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class BatchApiServer(EmbeddingServer):
    """The embeddings server plus a simulated Batch API (see the module docstring)."""

    def __init__(self, dimensions: int, **options: object) -> None:
        super().__init__(None, dimensions, **options)  # type: ignore[arg-type]
        self.RequestHandlerClass = _BatchHandler
        self.files: dict[str, SimFile] = {}
        self.batches: dict[str, SimBatch] = {}
        self.billed: Counter = Counter()  # texts of HTTP 200 output lines
        self.billed_tokens = 0
        self.batch_texts: Counter = Counter()  # texts in the input of every created batch
        self.uploads = 0
        self.calls: Counter = Counter()  # (method, route) of Batch API calls
        self.on_upload: Callable[[str], None] | None = None
        self.on_batch_created: Callable[[str], None] | None = None
        self.drop_create_answers = 0  # creates that make the batch, then drop the connection
        self._faults: deque[BatchFaults] = deque()
        self._failing_calls: deque[int] = deque()
        self._held = False
        self._ids = itertools.count(1)
        self._state_lock = threading.RLock()

    # -- what tests program ----------------------------------------------------------------

    def queue_faults(self, *faults: BatchFaults) -> None:
        """Faults for the next batches created, one per batch, in order."""
        with self._state_lock:
            self._faults.extend(faults)

    def fail_calls(self, status: int = 503, times: int = 1) -> None:
        """The next `times` Batch API calls answer HTTP `status`."""
        with self._state_lock:
            self._failing_calls.extend([status] * times)

    def hold(self) -> None:
        """Batches stop at `in_progress` until `release()`."""
        self._held = True

    def release(self) -> None:
        self._held = False

    def statuses(self) -> list[str]:
        with self._state_lock:
            return [batch.status for batch in self.batches.values()]

    # -- the simulation --------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}"

    def create_file(self, filename: str, purpose: str, content: bytes) -> SimFile:
        with self._state_lock:
            sim = SimFile(self._new_id("file"), filename, purpose, content, int(time.time()))
            self.files[sim.id] = sim
            self.uploads += 1
            return sim

    def create_batch(self, body: dict) -> tuple[int, dict]:
        with self._state_lock:
            sim_file = self.files.get(body.get("input_file_id", ""))
            if sim_file is None or sim_file.purpose != "batch":
                return 400, {"error": {"message": "input_file_id is not a batch file"}}
            if body.get("endpoint") != EMBEDDINGS_ENDPOINT:
                return 400, {"error": {"message": "this server only batches /v1/embeddings"}}
            lines = [json.loads(line) for line in sim_file.content.splitlines() if line.strip()]
            batch = SimBatch(
                self._new_id("batch"),
                sim_file.id,
                str(body.get("completion_window")),
                dict(body.get("metadata") or {}),
                lines,
                self._faults.popleft() if self._faults else BatchFaults(),
                int(time.time()),
            )
            self.batches[batch.id] = batch
            if not batch.faults.fail:
                self.batch_texts.update(line["body"]["input"] for line in lines)
            return 200, batch.as_json()

    def advance(self, batch: SimBatch) -> None:
        """One step of the batch's lifecycle (called on every retrieve)."""
        with self._state_lock:
            faults = batch.faults
            if batch.status == "validating":
                if faults.fail:
                    batch.status = "failed"
                    batch.errors = [{"code": "invalid_file", "message": "injected", "line": 1}]
                else:
                    batch.status = "in_progress"
            elif batch.status == "cancelling":
                self._finish(batch, "cancelled", processed=faults.cancel_after)
            elif batch.status == "in_progress" and not self._held:
                if faults.expire_after is not None:
                    self._finish(batch, "expired", processed=faults.expire_after)
                else:
                    batch.status = "finalizing"
            elif batch.status == "finalizing":
                self._finish(batch, "completed", processed=len(batch.requests))

    def _finish(self, batch: SimBatch, status: str, processed: int) -> None:
        faults = batch.faults
        kinds = ["lost"] * faults.lost + ["zero"] * faults.zero + ["nan"] * faults.nan
        kinds += ["wrong_size"] * faults.wrong_size + ["error"] * faults.error_lines
        output: list[dict] = []
        errors: list[dict] = []
        valid: list[dict] = []
        for number, request in enumerate(batch.requests[:processed]):
            kind = kinds[number] if number < len(kinds) else None
            custom_id = request["custom_id"]
            if kind is not None:
                batch.affected.setdefault(kind, []).append(custom_id)
            if kind == "error":
                errors.append(_error_line(custom_id))
                continue
            line = self._answer(request, kind)
            if kind != "lost":
                output.append(line)
                self.billed[request["body"]["input"]] += 1
                self.billed_tokens += line["response"]["body"]["usage"]["total_tokens"]
            if kind is None:
                valid.append(line)
        for line in valid[: faults.duplicate]:
            batch.affected.setdefault("duplicate", []).append(line["custom_id"])
            output.append(line)
        for number in range(faults.unknown):
            unknown = dict(valid[0] if valid else _error_line("x"), custom_id=f"{number:032x}")
            batch.affected.setdefault("unknown", []).append(unknown["custom_id"])
            output.append(unknown)
        batch.completed = min(processed, len(batch.requests)) - len(errors)
        batch.failed = len(errors)
        if output:
            batch.output_file_id = self._result_file(batch, "output", output)
        if errors:
            batch.error_file_id = self._result_file(batch, "error", errors)
        batch.status = status

    def _result_file(self, batch: SimBatch, kind: str, lines: list[dict]) -> str:
        content = b"".join(json.dumps(line).encode("utf-8") + b"\n" for line in lines)
        return self.create_file(f"{batch.id}_{kind}.jsonl", "batch_output", content).id

    def _answer(self, request: dict, kind: str | None) -> dict:
        body = request["body"]
        text = body["input"]
        vector = synthetic_vector(text, self.dimensions)
        if kind == "zero":
            vector = np.zeros_like(vector)
        elif kind == "nan":
            vector = vector.copy()
            vector[0] = np.nan
        elif kind == "wrong_size":
            vector = vector[:-1]
        tokens = server_token_count(text)
        embedding = encode(vector, body.get("encoding_format") == "base64")
        return {
            "id": self._new_id("batch_req"),
            "custom_id": request["custom_id"],
            "response": {
                "status_code": 200,
                "request_id": self._new_id("req"),
                "body": {
                    "object": "list",
                    "model": body.get("model"),
                    "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            },
            "error": None,
        }


def _error_line(custom_id: str) -> dict:
    return {
        "id": f"batch_req_error_{custom_id[:8]}",
        "custom_id": custom_id,
        "response": {
            "status_code": 500,
            "request_id": "req_error",
            "body": {"error": {"message": "injected server error", "type": "server_error"}},
        },
        "error": None,
    }


class _BatchHandler(_Handler):
    server: BatchApiServer

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parsed = urllib.parse.urlsplit(self.path)
        parts = [part for part in parsed.path.split("/") if part]
        if parts[:1] == ["v1"]:
            parts = parts[1:]
        return parts, urllib.parse.parse_qs(parsed.query)

    def _injected_failure(self, method: str, parts: list[str]) -> bool:
        server = self.server
        with server._state_lock:
            server.calls[
                (method, "/".join(parts[:1] + ["{id}"] * (len(parts) > 1) + parts[2:]))
            ] += 1
            status = server._failing_calls.popleft() if server._failing_calls else None
        if status is not None:
            self._error(status, f"injected HTTP {status}")
            return True
        return False

    def _json_body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_POST(self) -> None:
        parts, _ = self._route()
        if parts[:1] not in (["files"], ["batches"]):
            super().do_POST()  # the synchronous embeddings route
            return
        if self._injected_failure("POST", parts):
            return
        server = self.server
        if parts == ["files"]:
            fields = self._multipart()
            sim = server.create_file(
                fields["file"][0], fields["purpose"][1].decode(), fields["file"][1]
            )
            if server.on_upload is not None:
                server.on_upload(sim.id)
            self._reply(200, sim.as_json())
        elif parts == ["batches"]:
            status, payload = server.create_batch(self._json_body())
            if status == 200 and server.on_batch_created is not None:
                server.on_batch_created(payload["id"])
            with server._state_lock:
                drop = status == 200 and server.drop_create_answers > 0
                server.drop_create_answers -= drop
            if drop:  # the batch exists, but the client never hears of it
                self._abort(reset=False)
                return
            self._reply(status, payload)
        elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            with server._state_lock:
                batch = server.batches.get(parts[1])
                if batch is None:
                    self._reply(404, {"error": {"message": "no such batch"}})
                    return
                if batch.status in ("validating", "in_progress", "finalizing"):
                    batch.status = "cancelling"
                self._reply(200, batch.as_json())
        else:
            self._reply(404, {"error": {"message": "unknown route"}})

    def _multipart(self) -> dict[str, tuple[str | None, bytes]]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        header = f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        return fields

    def do_GET(self) -> None:
        parts, query = self._route()
        if self._injected_failure("GET", parts):
            return
        server = self.server
        with server._state_lock:
            if parts == ["files"]:
                purpose = (query.get("purpose") or [None])[0]
                files = [f for f in server.files.values() if purpose in (None, f.purpose)]
                self._list([f.as_json() for f in reversed(files)])
            elif len(parts) == 2 and parts[0] == "files" and parts[1] in server.files:
                self._reply(200, server.files[parts[1]].as_json())
            elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                sim = server.files.get(parts[1])
                if sim is None:
                    self._reply(404, {"error": {"message": "no such file"}})
                else:
                    self._reply(200, sim.content)
            elif parts == ["batches"]:
                self._list([batch.as_json() for batch in reversed(server.batches.values())])
            elif len(parts) == 2 and parts[0] == "batches" and parts[1] in server.batches:
                batch = server.batches[parts[1]]
                server.advance(batch)
                self._reply(200, batch.as_json())
            else:
                self._reply(404, {"error": {"message": "unknown route"}})

    def do_DELETE(self) -> None:
        parts, _ = self._route()
        if self._injected_failure("DELETE", parts):
            return
        with self.server._state_lock:
            if len(parts) == 2 and parts[0] == "files" and parts[1] in self.server.files:
                del self.server.files[parts[1]]
                self._reply(200, {"id": parts[1], "object": "file", "deleted": True})
            else:
                self._reply(404, {"error": {"message": "no such file"}})

    def _list(self, items: list[dict]) -> None:
        self._reply(200, {"object": "list", "data": items, "has_more": False})


@contextmanager
def running_batch_api_server(dimensions: int = 384, **options: object) -> Iterator[BatchApiServer]:
    """Start the simulated Batch API on a free loopback port; stop it on exit."""
    with serving(BatchApiServer(dimensions, **options)) as server:
        yield server
