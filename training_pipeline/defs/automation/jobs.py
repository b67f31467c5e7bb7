"""The jobs of the automation: `refresh_<model>` per model (the four range assets) and
`refresh_labelled_datasets` (labelled datasets, plus caches where the label sensor needs them)."""

from collections.abc import Sequence

from dagster import AssetKey, AssetSelection, define_asset_job

from training_pipeline.defs.dagster_compat import UnresolvedAssetJobDefinition
from training_pipeline.defs.keys import (
    LABELS_JOB_NAME,
    embedding_cache_key,
    labelled_dataset_key,
    range_asset_keys,
    refresh_job_name,
)


def build_refresh_job(model_name: str) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        refresh_job_name(model_name),
        selection=AssetSelection.assets(*range_asset_keys(model_name)),
        description=(
            f"Raw text, preprocessed text, `{model_name}` embedding cache and labelled dataset of "
            "aid ranges (texts already cached are not embedded again)."
        ),
    )


def build_labels_job(model_names: Sequence[str]) -> UnresolvedAssetJobDefinition:
    keys = [key for name in model_names for key in _label_keys(name)]
    return define_asset_job(
        LABELS_JOB_NAME,
        selection=AssetSelection.assets(*keys),
        description=(
            "Labelled datasets of aid ranges that received new labels (each run selects only the "
            "assets it needs; the embedding cache only for newly labelled, unembedded videos)."
        ),
    )


def _label_keys(model_name: str) -> list[AssetKey]:
    return [embedding_cache_key(model_name), labelled_dataset_key(model_name)]
