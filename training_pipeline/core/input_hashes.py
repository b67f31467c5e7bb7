"""The hash of what a partition's rows were built from, recorded with their write.

Every asset that keeps unchanged partitions (raw text, preprocessed text, labelled dataset)
describes a partition's inputs as a JSON-able mapping (its code version, its upstream rows'
fingerprint or write identity, its run config) and records this hash with the write; a later
run that computes the same hash keeps the stored rows (see `defs.io_manager_reuse`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from training_pipeline.core.model_identity import canonical_json


def input_hash(inputs: Mapping[str, Any]) -> str:
    """SHA-256 (first 128 bits, hex) of the canonical JSON of a partition's inputs."""
    return hashlib.sha256(canonical_json(dict(inputs)).encode("utf-8")).hexdigest()[:32]
