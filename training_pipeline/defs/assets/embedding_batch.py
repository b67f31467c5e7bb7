"""The embedding step's batch branch: half-price embedding through a Batch API, and the adoption
of recorded batches by every later run of the model, whatever its mode.

With `mode: batch` the step embeds what is missing through `embedding.batch_runner` (submit,
record, wait, collect, retry); with `mode: sync` it still first collects any recorded open batch
that covers texts it needs (waiting for it if it has not ended), since embedding those texts
again would pay for them twice; what no batch gave goes to the synchronous engine as before.

Batch vectors are stored by a `CacheWriter` of their own (same cache, same store path, same
reconnect budget), so the synchronous numbers (`run_texts_sent`, ...) keep counting only what
the synchronous engine sent, and the per-range `new_embeddings` count the rows of both writers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import psycopg
from dagster import AssetExecutionContext, Failure, MetadataValue

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.defs.assets.embedding_report import RESUME, model_endpoint
from training_pipeline.defs.partitions import run_partition_keys
from training_pipeline.embedding.batch_client import BatchApiError, BatchClient
from training_pipeline.embedding.batch_runner import BatchesStillRunning, BatchRun, BatchRunStats
from training_pipeline.storage.batch_state import BatchJobs, BatchLockTimeout
from training_pipeline.storage.cache_writer import CacheWriter
from training_pipeline.storage.embedding_cache import EmbeddingCache

LOCK_WAIT_SECONDS = 60.0
"""How long a step waits for another step working on the same model's batches (the pool makes
that rare; a killed run's lock goes with its connection)."""


@dataclass(frozen=True)
class BatchSettings:
    """The batch part of the embedding cache's run config."""

    mode: Literal["sync", "batch"]
    failed_lines: Literal["retry_batch", "sync"]
    retry_rounds: int
    wait_seconds: float | None


def refuse_unsupported_mode(model_name: str, model: EmbeddingModelConfig, mode: str) -> None:
    """Fail at once when batch mode is asked of a model whose endpoint has no Batch API."""
    if mode == "batch" and not model.batch_supported:
        raise Failure(
            description=(
                f"embedding model {model_name!r} cannot run in batch mode: its table in "
                "embedding_models.toml does not say `batch_supported = true` (only an 'openai' "
                "model whose endpoint offers the Batch API can). Nothing was submitted; run "
                "with `mode: sync`, or set batch_supported if the endpoint has a Batch API."
            ),
            metadata={"model": model_name, "mode": mode},
        )


def batch_metadata(stats: BatchRunStats, model: EmbeddingModelConfig, stored: int) -> dict:
    """The run's batch numbers as plain numbers (Dagster plots them across runs)."""
    statuses = stats.final_statuses
    metadata: dict[str, object] = {
        "run_batches_submitted": stats.submitted,
        "run_batches_adopted": stats.adopted,
        "run_batches_abandoned": stats.abandoned,
        "run_batches_completed": statuses["completed"],
        "run_batches_expired": statuses["expired"],
        "run_batches_cancelled": statuses["cancelled"],
        "run_batches_failed": statuses["failed"],
        "run_batch_texts_submitted": stats.texts_submitted,
        "run_batch_texts_resubmitted": stats.texts_resubmitted,
        "run_batch_vectors_received": stats.vectors_received,
        "run_batch_vectors_stored_by_another_run": stats.vectors_received - stored,
        "run_batch_failed_lines": stats.failed_lines,
        "run_batch_tokens": stats.tokens,
        "run_batch_tokens_reported_by_api": stats.tokens_reported,
        "run_batch_tokens_estimated": stats.tokens_estimated,
        "run_batch_polls": stats.polls,
        "run_batch_api_calls": stats.api_calls,
        "run_batch_api_retries": stats.api_retries,
        "run_batch_seconds": MetadataValue.float(round(stats.seconds, 3)),
    }
    causes = dict(stats.failed_by_cause)
    if stats.unknown_lines:
        causes["unknown custom_id"] = stats.unknown_lines
    if stats.unparsable_lines:
        causes["unreadable line"] = stats.unparsable_lines
    if causes:
        metadata["run_batch_failed_lines_by_cause"] = MetadataValue.json(
            dict(sorted(causes.items()))
        )
    price = model.batch_price_per_million_tokens
    if price is not None:
        metadata["run_batch_estimated_cost_usd"] = MetadataValue.float(
            stats.tokens * price / 1_000_000
        )
    return metadata


@dataclass
class BatchBranch:
    """The batch work of one embedding step; `embed` returns what is left for the sync engine."""

    context: AssetExecutionContext
    model_name: str
    model: EmbeddingModelConfig
    settings: BatchSettings
    cache: EmbeddingCache
    writer: CacheWriter
    run: BatchRun | None = None

    def embed(self, to_embed: pd.DataFrame) -> pd.DataFrame:
        """Embed through batches what this step may; the rows of `to_embed` still missing that
        the synchronous engine should embed. Raises `Failure` (everything stays recorded)."""
        needed = dict(zip(to_embed["input_checksum"], to_embed["input_text"], strict=True))
        if not needed or self.model.type != "openai":
            return to_embed
        jobs = BatchJobs(self.cache.connection, self.cache.schema, self.cache.identity)
        batch_mode = self.settings.mode == "batch"
        if not batch_mode and not jobs.open_jobs(list(needed)):
            return to_embed  # the common case: nothing recorded, the sync path as always
        log = self.context.log
        try:
            jobs.ensure_tables()
            client = BatchClient(self.model_name, self.model, log=log.warning)
            run = BatchRun(
                self.model_name,
                self.model,
                client,
                jobs,
                self.writer.store,
                submit=batch_mode,
                retry=self.settings.failed_lines,
                retry_rounds=self.settings.retry_rounds,
                wait_seconds=self.settings.wait_seconds,
                aid_ranges=run_partition_keys(self.context),
                run_id=self.context.run.run_id,
                log=log.info,
                warn=log.warning,
            )
            self.run = run
            with jobs.lock(LOCK_WAIT_SECONDS):
                outcome = run.run(needed)
        except BatchesStillRunning as error:
            tail = "Everything collected so far is cached; re-run later to collect the rest."
            raise self.failure(str(error), needed, tail) from None
        except (BatchApiError, BatchLockTimeout) as error:
            raise self.failure(str(error), needed) from None
        except psycopg.OperationalError as error:
            cause = f"database unavailable: {str(error).strip().splitlines()[0]}"
            raise self.failure(cause, needed) from None
        left = to_embed[to_embed["input_checksum"].isin(set(outcome.remaining))]
        if batch_mode and self.settings.failed_lines == "retry_batch" and len(left):
            reasons = sorted(set(outcome.failures.values()))[:5]
            raise self.failure(
                f"embedding model {self.model_name!r} at {model_endpoint(self.model)}: batch "
                f"mode: {len(left)} texts got no valid vector from their batches after "
                f"{self.settings.retry_rounds} retry round(s) (batch_retry_rounds); reasons: "
                + "; ".join(reasons),
                needed,
            )
        return left

    @property
    def stats(self) -> BatchRunStats | None:
        return self.run.stats if self.run is not None else None

    def metadata(self) -> dict[str, object]:
        """The batch numbers of this step (none when it did no batch work)."""
        if self.stats is None:
            return {}
        stored = len(self.writer.written)
        return {"mode": self.settings.mode, **batch_metadata(self.stats, self.model, stored)}

    def failure(self, cause: str, needed: dict[str, str], tail: str = RESUME) -> Failure:
        """The step's failure: what is stored, what is missing, the batch numbers."""
        stored = len(self.writer.written)
        received = self.run.received if self.run is not None else set()
        missing = sum(1 for checksum in needed if checksum not in received)
        if not cause.startswith("embedding model"):
            cause = f"embedding model {self.model_name!r} at {model_endpoint(self.model)}: {cause}"
        stats = self.stats or BatchRunStats()
        return Failure(
            description=f"{cause}. {missing} of {len(needed)} texts are still missing. {tail}",
            metadata={
                "new_embeddings": stored,
                "missing_embeddings": missing,
                "database_reconnects": self.writer.reconnects,
                "mode": self.settings.mode,
                **batch_metadata(stats, self.model, stored),
            },
        )
