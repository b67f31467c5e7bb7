"""Per-partition metadata added with one check of the step's partition keys
(`dagster_compat.add_partition_metadata`), in a real run over a range of dynamic partitions."""

from dagster import (
    AssetExecutionContext,
    DagsterInvariantViolationError,
    DynamicPartitionsDefinition,
    asset,
    materialize,
)

from training_pipeline.defs.dagster_compat import add_partition_metadata

PARTITIONS = DynamicPartitionsDefinition(name="metadata_test_ranges")


def metadata_asset(extra_key: str | None):
    @asset(partitions_def=PARTITIONS)
    def ranges(context: AssetExecutionContext) -> None:
        keys = context.partition_keys
        metadata = {key: {"videos": number} for number, key in enumerate(keys, start=1)}
        if extra_key is not None:
            metadata[extra_key] = {"videos": 99}
        add_partition_metadata(
            context.get_step_execution_context(), context.asset_key, metadata, keys
        )

    return ranges


def run_over_a_and_b(instance, extra_key: str | None = None):
    instance.add_dynamic_partitions(PARTITIONS.name, ["a", "b", "c"])
    return materialize(
        [metadata_asset(extra_key)],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "a",
            "dagster/asset_partition_range_end": "b",
        },
        raise_on_error=False,
    )


def test_each_targeted_partition_gets_its_own_metadata(instance):
    result = run_over_a_and_b(instance)
    assert result.success
    videos = {
        event.partition: event.metadata["videos"].value
        for event in result.asset_materializations_for_node("ranges")
    }
    assert videos == {"a": 1, "b": 2}


def test_metadata_for_a_partition_the_step_does_not_target_fails_the_step(instance):
    result = run_over_a_and_b(instance, extra_key="c")
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "['c'] that are not being targeted" in failure.step_failure_data.error.message
    assert DagsterInvariantViolationError.__name__ in failure.step_failure_data.error.cls_name
