"""Which labelled dataset partitions are unchanged, decided before any row is built.

A partition's rows are a function of its inputs: the stored preprocessed text of the range (named
by the write those rows are, from `partition_writes`), its label rows, the model's identity and
input limit, the tie policy, the code below (its version) and the cached vectors of its texts.
Each write records the hash of those inputs with the partition (`partition_writes.input_hash`);
a later run computes the same hash cheaply in SQL (the text write's record, the MD5 of the label
rows, the cache state of the stored checksums; no text or vector is read) and keeps the stored
rows when it matches, the rows are as many as recorded and every checksum is still cached for
the model. Anything else, or `force_rewrite`, rebuilds the partition. A record without a hash
(written before hashes were recorded) never matches, nor does a range whose text rows have no
write record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from training_pipeline.core.input_hashes import input_hash as hash_of_inputs
from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import TEXT_FORMAT
from training_pipeline.defs.resources import PostgresResource
from training_pipeline.storage.cached_lookups import cache_version
from training_pipeline.storage.dataset_cache_states import (
    CacheState,
    record_states,
    recorded_states,
)
from training_pipeline.storage.partition_inputs import (
    StoredPartition,
    stored_counts,
    stored_partitions,
)
from training_pipeline.storage.partition_writes import PartitionWrite, read_writes

LABELLED_ROWS_CODE_VERSION = "labelled_rows.2"
"""Version of the labelled dataset's logic: bump it whenever the same inputs give other rows
(2: `user_labels_json` as the old writer's JSON array). It is the asset's `code_version` and part
of every input hash, so a bump rebuilds every partition once."""


@dataclass(frozen=True)
class DatasetInputs:
    """What every partition of one run is built with, besides its own rows."""

    identity: ModelIdentity
    model: EmbeddingModelConfig
    tie_policy: str

    def input_hash(self, label_fingerprint: str, text_fingerprint: str, cache_state: str) -> str:
        """SHA-256 (first 128 bits) of the canonical JSON of every input of a partition."""
        inputs = {
            "code_version": LABELLED_ROWS_CODE_VERSION,
            "text_format": TEXT_FORMAT,
            "model_fingerprint": self.identity.fingerprint,
            "dimensions": self.identity.dimensions,
            "max_tokens_per_input": self.model.max_tokens_per_input,
            "tie_policy": self.tie_policy,
            "label_fingerprint": label_fingerprint,
            "text_fingerprint": text_fingerprint,
            "cache_state": cache_state,
        }
        return hash_of_inputs(inputs)


@dataclass(frozen=True)
class UnchangedPartition:
    """A partition whose stored rows are what this run would build."""

    key: str
    input_hash: str
    stored: StoredPartition
    write: PartitionWrite


StatesRecorder = Callable[[Mapping[str, PartitionWrite], str, Mapping[str, CacheState]], None]
"""Records fresh cache states (`dataset_cache_states.record_states`) in its own transaction."""


def states_recorder(postgres: PostgresResource, table: str) -> StatesRecorder:
    """A recorder of `table`'s fresh cache states on a connection of its own: the keep decision
    reads in a repeatable-read transaction, which must not write."""

    def record(
        writes: Mapping[str, PartitionWrite], version: str, states: Mapping[str, CacheState]
    ) -> None:
        with postgres.connect() as connection:
            record_states(connection, postgres.schema, table, writes, version, states)

    return record


def unchanged_partitions(
    connection: psycopg.Connection,
    schema: str,
    table: str,
    cache: sql.Identifier,
    inputs: DatasetInputs,
    keys: Sequence[str],
    label_fingerprints: Mapping[str, str],
    text_fingerprints: Mapping[str, str],
    record_states: StatesRecorder | None = None,
) -> dict[str, UnchangedPartition]:
    """The partitions among `keys` whose stored rows can stay, read in the caller's transaction
    (the one that read the fingerprints). A partition's cache state recorded for its rows as
    written and the model's cache as it is is reused; the others' are computed and, with
    `record_states`, recorded for the next decision."""
    writes = {
        key: write
        for key, write in read_writes(connection, schema, table, keys).items()
        if write.input_hash is not None
    }
    if not writes:
        return {}
    dataset = sql.Identifier(schema, table)
    version = cache_version(connection, schema, inputs.identity)
    known = recorded_states(connection, schema, table, writes, version)
    stored = stored_partitions(
        connection, dataset, cache, inputs.identity, [k for k in writes if k not in known]
    )
    for key, counts in stored_counts(connection, dataset, list(known)).items():
        state = known[key]
        stored[key] = StoredPartition(
            *counts, state.distinct_checksums, state.cached_checksums, state.newest_vector
        )
    fresh = {
        key: CacheState(p.distinct_checksums, p.cached_checksums, p.newest_vector)
        for key, p in stored.items()
        if key not in known
    }
    if fresh and record_states is not None:
        record_states(writes, version, fresh)
    found = {}
    for key, write in writes.items():
        partition = stored.get(key)
        if key not in text_fingerprints or partition is None:
            continue
        expected = inputs.input_hash(
            label_fingerprints[key], text_fingerprints[key], partition.cache_state
        )
        if (
            write.input_hash == expected
            and write.row_count == partition.rows
            and partition.fully_cached
        ):
            found[key] = UnchangedPartition(key, expected, partition, write)
    return found
