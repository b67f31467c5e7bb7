"""Dagster's PostgreSQL instance storage, with one small connection pool per process.

`dagster-postgres` opens a new database connection for every statement it runs outside the
webserver (`NullPool`), so that no process holds connections it does not use. A run writes an
event for every step start, output, materialization, log line and check: on the five-range cold
build that was about 60 connections per run, 0.9 s of connection set-up in the range run and
0.2 s in the snapshot run, all of it on the run's critical path.

`PooledPostgresStorage` is `DagsterPostgresStorage` (same config, same tables, same SQL) whose
run, event log and schedule storages share one engine that keeps `POOL_SIZE` connections open
between statements. `pool_pre_ping` tests a connection before each use, so one dropped while a
step waited (a database restart, an idle timeout) is replaced instead of failing the next event
write. A process holds at most `POOL_SIZE` idle connections; bursts above that open and close
extra ones, as before; the connections close with the process (or when the instance is garbage
collected). The webserver still replaces the engines with its own (`optimize_for_webserver`).

deploy/dagster.yaml selects it (`storage: custom:`); every Dagster process imports it from this
package, which each of them has installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

from training_pipeline.defs.dagster_compat import ConfigurableClassData, share_storage_engine

POOL_SIZE = 2
"""Idle connections a process keeps: the run worker's event writes and its run-status updates."""
POOL_OVERFLOW = 8
"""Connections opened beyond `POOL_SIZE` at once (closed when returned), before a writer waits."""
POOL_RECYCLE_SECONDS = 3600
"""A pooled connection older than this is closed and reopened (long-lived daemons)."""


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose three storages share one pooled engine (see module doc)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._pooled_engine = create_pg_engine(
            postgres_url,
            token_provider,
            isolation_level="AUTOCOMMIT",  # what dagster-postgres's own engines use
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_recycle=POOL_RECYCLE_SECONDS,
            pool_pre_ping=True,
        )
        share_storage_engine(
            [self.run_storage, self.event_log_storage, self.schedule_storage], self._pooled_engine
        )

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        return PooledPostgresStorage(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
