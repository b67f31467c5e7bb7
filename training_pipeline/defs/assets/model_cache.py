"""Opening a model's cache for a step: its identity, the table, and the registry's consent.

Both steps that touch cached vectors (the embedding cache, which writes them, and the labelled
dataset, which reads them) start here, so neither can use vectors of another configuration of
the model: a mismatch fails the step, before anything is sent, stored or read, with the fields
that changed and the two ways out.
"""

from collections.abc import Callable

import psycopg
from dagster import Failure, MetadataValue

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.embedding.clients import model_identity
from training_pipeline.storage.embedding_cache import CACHE_TABLE, EmbeddingCache
from training_pipeline.storage.model_registry import (
    ModelFingerprintMismatch,
    ModelIdentityError,
    claim_model,
)


def identity_failure(error: ModelIdentityError, identity: ModelIdentity) -> Failure:
    """The step's failure for a cache that belongs to another configuration (or is dropping)."""
    metadata: dict[str, object] = {
        "model": identity.model,
        "configured_fingerprint": identity.fingerprint,
    }
    if isinstance(error, ModelFingerprintMismatch):
        metadata["cached_fingerprint"] = error.stored_fingerprint
        metadata["changed_identity_fields"] = MetadataValue.json(error.changes)
    return Failure(description=str(error), metadata=metadata)


def claim_model_cache(
    connection: psycopg.Connection,
    schema: str,
    model_name: str,
    model: EmbeddingModelConfig,
    warn: Callable[[str], None],
) -> EmbeddingCache:
    """The model's cache on `connection` (autocommit), its table and registry ensured and its
    identity claimed; raises `Failure` when the cache holds another configuration's vectors."""
    identity = model_identity(model_name, model)
    cache = EmbeddingCache(connection, schema, identity)
    cache.ensure_table()
    try:
        claim_model(connection, schema, CACHE_TABLE, identity, warn)
    except ModelIdentityError as error:
        raise identity_failure(error, identity) from None
    return cache
