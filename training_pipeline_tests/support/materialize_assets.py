"""Real materializations for tests: a model's four range assets for one aid range, and any
unpartitioned assets with their run config."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetKey, DagsterInstance, Definitions, materialize

from training_pipeline.defs.keys import range_asset_keys


def build_range(
    defs: Definitions,
    instance: DagsterInstance,
    model: str,
    partition_key: str,
    run_config: dict | None = None,
):
    """Materialize raw text, preprocessed text, embedding cache and labelled dataset of `model`
    for one aid range (what `refresh_<model>` builds)."""
    return materialize(
        list(defs.assets),
        selection=range_asset_keys(model),
        partition_key=partition_key,
        instance=instance,
        resources=defs.resources,
        run_config=run_config,
    )


def materialize_with_config(
    defs: Definitions,
    instance: DagsterInstance,
    configs: Mapping[AssetKey, dict],
    raise_on_error: bool = True,
):
    """Materialize the given unpartitioned assets in one run, each with its op config."""
    return materialize(
        list(defs.assets),
        selection=list(configs),
        instance=instance,
        resources=defs.resources,
        run_config={
            "ops": {
                key.to_python_identifier(): {"config": config} for key, config in configs.items()
            }
        },
        raise_on_error=raise_on_error,
    )
