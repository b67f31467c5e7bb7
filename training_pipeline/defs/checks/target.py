"""What the data quality rules look at (`CheckTarget`: one model's stored labelled rows of some
aid ranges) and how a rule reuses a recorded verdict (`with_reuse`).

Every rule's verdict over a range is a function of some stored rows (and parameters). Each rule
names exactly those with a *verdict key* per range: the range's row versions (the vector
rules), those combined with the range's text row versions, label fingerprint and tie policy (the
label rule), or the row versions of every range of the table (the duplicate rule, which compares
a range's aids with every other range's). A recorded verdict whose key is the key of the rows
as they are now is reused (no row read but the ones that make the key); any other range is
evaluated and its verdict collected for the caller to record (`check_verdicts`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from training_pipeline.defs.keys import PREPROCESSED_TEXT_TABLE, labelled_dataset_table
from training_pipeline.storage.check_verdicts import (
    StoredRows,
    Verdict,
    read_verdicts,
    stored_rows,
    table_version,
)
from training_pipeline.storage.sources import SourceTables

DUPLICATE_RULE = "no_duplicate_aids.1"
"""The duplicate rule's versioned name in `check_verdicts` (bump it when its SQL changes)."""

PerRange = dict[str, tuple[int, list[int]]]
"""Per range: its offending rows (or aids) and a sample of their aids."""


@dataclass(frozen=True)
class CheckTarget:
    """The stored rows a rule looks at: one model's labelled dataset, some aid ranges.

    `tie_policies` holds, per range, the tie policy of the write whose rows are stored (see
    `io_manager_lineage`); a range without one is checked as if ties must have rows.
    """

    connection: psycopg.Connection
    schema: str
    model_name: str
    dimensions: int
    keys: Sequence[str]
    source_tables: SourceTables
    tie_policies: Mapping[str, str | None] = field(default_factory=dict)
    run_id: str | None = None
    """The evaluating run: its fresh verdicts are collected in `new_verdicts` for the caller to
    record (None: a reader that records nothing, the snapshot's gate)."""
    new_verdicts: dict[str, dict[str, Verdict]] = field(default_factory=dict)
    _stored: dict[str | None, StoredRows] = field(default_factory=dict)

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, labelled_dataset_table(self.model_name))

    @property
    def table_name(self) -> str:
        return labelled_dataset_table(self.model_name)

    @property
    def preprocessed(self) -> sql.Identifier:
        return sql.Identifier(self.schema, PREPROCESSED_TEXT_TABLE)

    def stored(self) -> dict[str, StoredRows]:
        """The ranges' stored rows (row versions, rows, inconsistent rows), read once, in one
        scan of every range of the table: the duplicate rule's verdict key needs them all."""
        if not self._stored and self.keys:
            self._stored.update(stored_rows(self.connection, self.table, None, "inconsistent"))
        return {key: self._stored[key] for key in self.keys if key in self._stored}

    def table_version(self) -> str:
        """The row versions of every range of the table, as one value."""
        self.stored()
        return table_version(self._stored)


def with_reuse(
    target: CheckTarget,
    rule: str,
    versions: Mapping[str, str],
    evaluate: Callable[[list[str]], PerRange],
    reuse_failed: bool = True,
) -> tuple[PerRange, dict[str, str]]:
    """Per range, the verdict of `rule` (its offending rows and sample aids), and the runs whose
    verdicts were reused. A range whose `versions` key is that of a recorded verdict reuses it
    (a failed one only with `reuse_failed`); `evaluate` gets the others, whose verdicts are
    collected in `target.new_verdicts` (a range without a key is evaluated, never recorded)."""
    reused = read_verdicts(target.connection, target.schema, target.table_name, rule, versions)
    if not reuse_failed:
        reused = {key: verdict for key, verdict in reused.items() if verdict.bad_rows == 0}
    fresh = [key for key in target.keys if key not in reused]
    found = evaluate(fresh) if fresh else {}
    if target.run_id is not None:
        target.new_verdicts[rule] = {
            key: Verdict(versions[key], *found.get(key, (0, [])), target.run_id)
            for key in fresh
            if key in versions
        }
    per_range: PerRange = {key: (v.bad_rows, v.sample_aids) for key, v in reused.items()}
    per_range.update(found)
    return per_range, {key: verdict.run_id for key, verdict in sorted(reused.items())}
