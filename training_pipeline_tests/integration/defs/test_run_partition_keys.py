"""A step's partition keys are resolved once: every part of the step sees the keys Dagster
gives, and asking again does not go back to the instance."""

from dagster import AssetExecutionContext, DagsterInstance, asset, materialize

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME
from training_pipeline.defs.partitions import aid_ranges_partitions, run_partition_keys

KEYS = ["0-9", "10-19", "20-29", "30-39"]


def test_the_keys_of_a_range_run_are_read_once_per_step():
    seen: list[list[str]] = []

    @asset(partitions_def=aid_ranges_partitions)
    def probe(context: AssetExecutionContext) -> None:
        seen.append(list(context.partition_keys))  # Dagster's own answer
        seen.append(run_partition_keys(context))
        instance = context.instance
        original = instance.get_dynamic_partitions
        asked: list[str] = []
        instance.get_dynamic_partitions = lambda name: asked.append(name) or original(name)
        try:
            seen.append(run_partition_keys(context))
            seen.append(run_partition_keys(context))
        finally:
            instance.get_dynamic_partitions = original
        assert asked == []  # the later calls did not load the keys again

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, KEYS)
        tags = {
            "dagster/asset_partition_range_start": KEYS[1],
            "dagster/asset_partition_range_end": KEYS[3],
        }
        assert materialize([probe], instance=instance, tags=tags).success
        assert materialize([probe], instance=instance, partition_key=KEYS[0]).success
    assert seen == [KEYS[1:]] * 4 + [[KEYS[0]]] * 4
