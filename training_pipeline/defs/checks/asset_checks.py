"""The rules of `rules.py` as Dagster asset checks of each model's labelled dataset: one step
after every materialization (error rules are blocking), or over every stored range when the
checks are executed on their own."""

from collections.abc import Iterator, Sequence

import psycopg
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    DagsterInstance,
    multi_asset_check,
)
from psycopg import sql

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.defs.automation.partition_sync import latest_materializations
from training_pipeline.defs.automation.shared import recorded_tie_policy
from training_pipeline.defs.checks.rules import RULES, CheckTarget, inconsistent_share_within_bound
from training_pipeline.defs.io_manager_lineage import materializations_of_writes
from training_pipeline.defs.keys import (
    labelled_dataset_checks_name,
    labelled_dataset_key,
    labelled_dataset_table,
)
from training_pipeline.defs.resources import PostgresResource, VideoSourceResource
from training_pipeline.storage.check_verdicts import record_verdicts
from training_pipeline.storage.partition_writes import read_writes


def build_labelled_dataset_checks(
    model_name: str, model: EmbeddingModelConfig
) -> list[AssetChecksDefinition]:
    """Every rule as an asset check of the model's labelled dataset, in one step (one query
    connection, one process under the multiprocess executor); error rules are blocking."""
    asset_key = labelled_dataset_key(model_name)
    specs = [
        AssetCheckSpec(
            name=rule.__name__,
            asset=asset_key,
            description=(rule.__doc__ or rule.__name__).strip().split("\n")[0],
            blocking=rule is not inconsistent_share_within_bound,
        )
        for rule in RULES
    ]

    @multi_asset_check(specs=specs, name=labelled_dataset_checks_name(model_name), can_subset=True)
    def check_labelled_rows(
        context: AssetCheckExecutionContext,
        postgres: PostgresResource,
        video_source: VideoSourceResource,
    ) -> Iterator[AssetCheckResult]:
        # One repeatable-read transaction: every rule and the tie policies see one state.
        with postgres.connect(repeatable_read=True) as connection:
            keys = checked_ranges(context, connection, postgres.schema, model_name)
            policies = stored_tie_policies(
                context.instance, connection, postgres.schema, model_name, keys
            )
            target = CheckTarget(
                connection,
                postgres.schema,
                model_name,
                model.dimensions,
                keys,
                video_source.tables,
                tie_policies=policies,
                run_id=context.run.run_id,
            )
            outcomes = [
                rule(target)
                for rule in RULES
                if AssetCheckKey(asset_key, rule.__name__) in context.selected_asset_check_keys
            ]
        # The fresh vector verdicts, for a later check of the same rows (`check_verdicts`),
        # recorded after the read: they name the row versions they saw, so rows written since
        # never reuse them.
        with postgres.connect() as connection:
            for rule, verdicts in target.new_verdicts.items():
                record_verdicts(connection, postgres.schema, target.table_name, rule, verdicts)
        for outcome in outcomes:
            yield AssetCheckResult(
                asset_key=asset_key,
                check_name=outcome.name,
                passed=outcome.passed,
                severity=outcome.severity,
                description=outcome.description,
                # Which ranges this verdict covers, and which of them fail it: a run may
                # check several ranges, and the snapshot's sidecar reports each range's own.
                metadata={
                    **outcome.metadata,
                    "aid_ranges": keys,
                    "failing_aid_ranges": outcome.failing,
                },
            )

    return [check_labelled_rows]


def stored_tie_policies(
    instance: DagsterInstance,
    connection: psycopg.Connection,
    schema: str,
    model_name: str,
    keys: Sequence[str],
) -> dict[str, str | None]:
    """Per range, the tie policy of the write whose rows are stored: from the materialization of
    the run the write record names; where there is none (rows written before writes were
    recorded, or by a run whose events are gone), from the latest materialization. A check
    needs only the policy, so a missing lineage is no reason to fail it (a snapshot fails)."""
    asset_key = labelled_dataset_key(model_name)
    writes = read_writes(connection, schema, labelled_dataset_table(model_name), keys)
    records = materializations_of_writes(instance, asset_key, writes, strict=False)
    records.update(
        latest_materializations(instance, asset_key, [k for k in keys if k not in records])
    )
    return {key: recorded_tie_policy(record) for key, record in records.items()}


def checked_ranges(
    context: AssetCheckExecutionContext,
    connection: psycopg.Connection,
    schema: str,
    model_name: str,
) -> list[str]:
    """The run's aid ranges; every stored range when the checks run on their own, unpartitioned
    (e.g. *Execute* on a check in the UI)."""
    if context.has_partition_key or context.has_partition_key_range:
        return list(context.partition_keys)
    table = sql.Identifier(schema, labelled_dataset_table(model_name))
    query = sql.SQL("SELECT DISTINCT aid_range FROM {} ORDER BY 1").format(table)
    return [row[0] for row in connection.execute(query).fetchall()]
