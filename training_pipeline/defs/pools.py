"""A Dagster pool's slot count on the instance, and the API slot guard of a step in the pool."""

from dagster import AssetExecutionContext, DagsterInstance

from training_pipeline.storage.api_slots import ApiSlots


def pool_slot_count(instance: DagsterInstance, pool: str) -> int:
    """The pool's limit: its set limit, else the instance's default pool limit, else 1 (a pool
    nobody limited still gets one API owner per model, see `storage.api_slots`)."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        limit = storage.get_concurrency_info(pool).limit
    else:
        limit = instance.global_op_concurrency_default_limit
    return max(1, limit or 1)


def api_slots_of_step(
    context: AssetExecutionContext, database_url: str, pool: str, reconnect_seconds: float
) -> ApiSlots:
    """The guard of the step's API part: as many slots as the pool has, named after the run,
    logging to the run, reconnecting within the cache writer's budget."""
    return ApiSlots(
        database_url,
        pool,
        pool_slot_count(context.instance, pool),
        holder=context.run.run_id,
        log=context.log.info,
        reconnect_seconds=reconnect_seconds,
    )
