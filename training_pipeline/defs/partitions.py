"""The aid-range partitions of every range asset: one dynamic set of keys, registered as aids
arrive (see `core.aid_ranges` for what a key is and `automation.partition_sync` for how)."""

from dagster import DynamicPartitionsDefinition

from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME

aid_ranges_partitions = DynamicPartitionsDefinition(name=AID_RANGES_PARTITIONS_NAME)
