"""How many slots a Dagster pool has, as the instance sees it (the API slot guard's count)."""

from dagster import DagsterInstance


def pool_slot_count(instance: DagsterInstance, pool: str) -> int:
    """The pool's limit: its set limit, else the instance's default pool limit, else 1 (a pool
    nobody limited still gets one API owner per model, see `storage.api_slots`)."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        limit = storage.get_concurrency_info(pool).limit
    else:
        limit = instance.global_op_concurrency_default_limit
    return max(1, limit or 1)
