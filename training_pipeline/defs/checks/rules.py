# Over 300 lines: every rule with its SQL in one place, shared by the checks and the snapshot's
# gate, and the verdict reuse of the vector rules next to them.
"""The data quality rules of the labelled datasets: what a trainer must be able to rely on.

Each rule is one SQL query over the stored rows of some aid ranges, so it checks what was
written, not what the step meant to write. The rules run twice:

- as Dagster asset checks after every labelled dataset materialization (blocking ones stop
  downstream steps of the same run and show red in the UI), and
- as a gate in the snapshot step, over exactly the ranges it is about to freeze, so a snapshot
  is never built from rows that fail an error-level rule, whichever run wrote them.

Error rules: vector size equals the model's dimensions; no zero or NaN vector; every labelled
video with text has a row; no aid twice. Warning rule: the share of inconsistent labels stays
under a bound (default 0.2, `TRAINING_PIPELINE_MAX_INCONSISTENT_SHARE`).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from dagster import AssetCheckSeverity, Failure
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.keys import PREPROCESSED_TEXT_TABLE, labelled_dataset_table
from training_pipeline.settings import load_settings
from training_pipeline.storage.check_verdicts import Verdict, read_verdicts, row_versions
from training_pipeline.storage.sources import SourceTables

SAMPLE = 10
VERDICT_REUSED = "verdict_reused_from_run_id"
"""Metadata of the vector rules: per range whose verdict was reused, the run that evaluated it."""


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
    """The evaluating run: its fresh vector verdicts are collected in `new_verdicts` for the
    caller to record (None: a reader that records nothing, the snapshot's gate)."""
    new_verdicts: dict[str, dict[str, Verdict]] = field(default_factory=dict)
    _versions: dict[str, str] = field(default_factory=dict)

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, labelled_dataset_table(self.model_name))

    @property
    def table_name(self) -> str:
        return labelled_dataset_table(self.model_name)

    def row_versions(self) -> dict[str, str]:
        """The ranges' row versions (`check_verdicts`), read once per target."""
        if not self._versions and self.keys:
            self._versions.update(row_versions(self.connection, self.table, self.keys))
        return self._versions

    @property
    def preprocessed(self) -> sql.Identifier:
        return sql.Identifier(self.schema, PREPROCESSED_TEXT_TABLE)


@dataclass(frozen=True)
class RuleOutcome:
    """The verdict of one rule over the target's ranges, and each range's own verdict.

    `failing` maps each range that fails the rule to its number of offending rows (for the
    warning rule: its inconsistent rows); a range absent from it passes.
    """

    name: str
    passed: bool
    severity: AssetCheckSeverity
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)

    def passed_in(self, key: str) -> bool:
        """This rule's verdict for one aid range."""
        return key not in self.failing


def _bad_rows_per_range(
    target: CheckTarget,
    condition: sql.Composable,
    params: tuple = (),
    keys: Sequence[str] | None = None,
) -> dict[str, tuple[int, list[int]]]:
    """Per range (of `keys`, default the target's) with rows matching `condition`: their number
    and a sample of their aids."""
    query = sql.SQL(
        "SELECT aid_range, count(*), (array_agg(aid ORDER BY aid))[1:{sample}] FROM {table}"
        " WHERE aid_range = ANY(%s) AND ({condition}) GROUP BY aid_range"
    ).format(sample=sql.Literal(SAMPLE), table=target.table, condition=condition)
    chosen = list(target.keys if keys is None else keys)
    rows = target.connection.execute(query, (chosen, *params)).fetchall()
    return {key: (int(count), list(aids)) for key, count, aids in rows}


def _vector_rule(
    target: CheckTarget, rule: str, condition: sql.Composable, params: tuple = ()
) -> tuple[dict[str, int], list[int], dict[str, str]]:
    """A rule over the stored vectors alone: per range, the bad rows, a sample of their aids,
    and the runs whose verdicts were reused. A range whose rows are the row versions a recorded
    verdict of `rule` was about reuses it (no vector read); the others are evaluated, and their
    verdicts collected for the caller to record (`check_verdicts`)."""
    versions = target.row_versions()
    reused = read_verdicts(target.connection, target.schema, target.table_name, rule, versions)
    fresh = [key for key in target.keys if key not in reused]
    found = _bad_rows_per_range(target, condition, params, fresh) if fresh else {}
    if target.run_id is not None:
        target.new_verdicts[rule] = {
            key: Verdict(versions[key], *found.get(key, (0, [])), target.run_id)
            for key in fresh
            if key in versions
        }
    per_range = {key: (v.bad_rows, v.sample_aids) for key, v in reused.items()}
    per_range.update(found)
    failing = {key: bad for key, (bad, _) in per_range.items() if bad}
    sample = sorted(aid for _, aids in per_range.values() for aid in aids)[:SAMPLE]
    return failing, sample, {key: verdict.run_id for key, verdict in sorted(reused.items())}


def vector_size_matches_model(target: CheckTarget) -> RuleOutcome:
    """Every vector has the model's configured number of dimensions."""
    failing, sample, reused = _vector_rule(
        target,
        f"vector_size_matches_model.1:{target.dimensions}",
        sql.SQL("vector_dims(embedding) <> %s"),
        (target.dimensions,),
    )
    bad = sum(failing.values())
    return RuleOutcome(
        "vector_size_matches_model",
        bad == 0,
        AssetCheckSeverity.ERROR,
        f"{bad} vectors are not {target.dimensions}-d",
        {
            "bad_rows": bad,
            "sample_aids": sample,
            "dimensions": target.dimensions,
            VERDICT_REUSED: reused,
        },
        failing,
    )


def no_zero_or_nan_vectors(target: CheckTarget) -> RuleOutcome:
    """No vector is all zero or holds NaN or infinity."""
    # NaN > 0 is false, so one comparison catches zero and NaN norms.
    failing, sample, reused = _vector_rule(
        target, "no_zero_or_nan_vectors.1", sql.SQL("NOT (vector_norm(embedding) > 0)")
    )
    bad = sum(failing.values())
    return RuleOutcome(
        "no_zero_or_nan_vectors",
        bad == 0,
        AssetCheckSeverity.ERROR,
        f"{bad} vectors are all zero or not finite",
        {"bad_rows": bad, "sample_aids": sample, VERDICT_REUSED: reused},
        failing,
    )


def every_labelled_video_has_a_row(target: CheckTarget) -> RuleOutcome:
    """Every labelled video with text has a row (tied ones may be left out by `exclude`)."""
    failing: dict[str, int] = {}
    sample: list[int] = []
    for key in target.keys:
        aid_range = AidRange.from_key(key)
        # Only a range built with `exclude` may leave ties out; `negative` and `positive` label
        # them, so a missing tied row is a missing row.
        ties_may_be_missing = target.tie_policies.get(key) == "exclude"
        # A label row without a user is not a vote (see `labels`), so it makes no video labelled.
        query = sql.SQL(
            """
            WITH latest AS (
                SELECT DISTINCT ON (aid, "user") aid, label FROM {labels}
                WHERE aid BETWEEN %(first)s AND %(last)s AND "user" IS NOT NULL
                ORDER BY aid, "user", created_at DESC, id DESC
            ), votes AS (
                SELECT aid, count(*) FILTER (WHERE label) AS positive,
                       count(*) FILTER (WHERE NOT label) AS negative
                FROM latest GROUP BY aid
            )
            SELECT v.aid FROM votes v
            JOIN {texts} t ON t.aid = v.aid AND t.aid_range = %(key)s AND t.text <> ''
            WHERE (NOT %(ties_may_be_missing)s OR v.positive <> v.negative)
              AND NOT EXISTS (
                  SELECT 1 FROM {table} d WHERE d.aid = v.aid AND d.aid_range = %(key)s)
            ORDER BY v.aid
            """
        ).format(
            labels=target.source_tables.labels_identifier,
            texts=target.preprocessed,
            table=target.table,
        )
        params = {
            "first": aid_range.first,
            "last": aid_range.last,
            "key": key,
            "ties_may_be_missing": ties_may_be_missing,
        }
        missing = [row[0] for row in target.connection.execute(query, params).fetchall()]
        if missing:
            failing[key] = len(missing)
        sample += missing[: SAMPLE - len(sample)]
    missing_total = sum(failing.values())
    return RuleOutcome(
        "every_labelled_video_has_a_row",
        missing_total == 0,
        AssetCheckSeverity.ERROR,
        f"{missing_total} labelled videos with text have no row",
        {"missing_rows": missing_total, "sample_aids": sample},
        failing,
    )


def no_duplicate_aids(target: CheckTarget) -> RuleOutcome:
    """No aid has more than one row, in these ranges or across ranges."""
    query = sql.SQL(
        "SELECT aid, array_agg(aid_range) FROM {table}"
        " WHERE aid IN (SELECT aid FROM {table} WHERE aid_range = ANY(%s))"
        " GROUP BY aid HAVING count(*) > 1 ORDER BY aid"
    ).format(table=target.table)
    duplicated = target.connection.execute(query, (list(target.keys),)).fetchall()
    wanted = set(target.keys)
    failing: dict[str, int] = {}
    for _aid, ranges in duplicated:
        for key in set(ranges) & wanted:
            failing[key] = failing.get(key, 0) + 1
    return RuleOutcome(
        "no_duplicate_aids",
        not duplicated,
        AssetCheckSeverity.ERROR,
        f"{len(duplicated)} aids have more than one row",
        {
            "duplicated_aids": len(duplicated),
            "sample_aids": [aid for aid, _ in duplicated[:SAMPLE]],
        },
        failing,
    )


def inconsistent_share_within_bound(target: CheckTarget) -> RuleOutcome:
    """The share of rows with disagreeing annotators stays under the bound (warning)."""
    bound = load_settings().max_inconsistent_share
    query = sql.SQL(
        "SELECT aid_range, count(*), count(*) FILTER (WHERE inconsistent) FROM {}"
        " WHERE aid_range = ANY(%s) GROUP BY aid_range"
    ).format(target.table)
    per_range = target.connection.execute(query, (list(target.keys),)).fetchall()
    rows = sum(count for _, count, _ in per_range)
    inconsistent = sum(count for *_, count in per_range)
    share = inconsistent / rows if rows else 0.0
    failing = {key: int(bad) for key, count, bad in per_range if count and bad / count > bound}
    return RuleOutcome(
        "inconsistent_share_within_bound",
        share <= bound,
        AssetCheckSeverity.WARN,
        f"{share:.1%} of rows have inconsistent labels (bound {bound:.0%})",
        {"rows": rows, "inconsistent": inconsistent, "share": share, "bound": bound},
        failing,
    )


RULES: tuple[Callable[[CheckTarget], RuleOutcome], ...] = (
    vector_size_matches_model,
    no_zero_or_nan_vectors,
    every_labelled_video_has_a_row,
    no_duplicate_aids,
    inconsistent_share_within_bound,
)


def evaluate_rules(target: CheckTarget) -> list[RuleOutcome]:
    """Every rule over the target's ranges."""
    return [rule(target) for rule in RULES]


def failed_errors(outcomes: Sequence[RuleOutcome]) -> list[RuleOutcome]:
    """The error-level rules that failed: these block a snapshot."""
    return [o for o in outcomes if not o.passed and o.severity == AssetCheckSeverity.ERROR]


def quality_gate(target: CheckTarget) -> list[RuleOutcome]:
    """The snapshot's gate: every rule over the ranges it is about to freeze. Raises a Failure
    naming each failed error-level rule and its aid ranges; returns the outcomes otherwise."""
    gate = evaluate_rules(target)
    blocking = failed_errors(gate)
    if blocking:
        raise Failure(
            description="snapshot blocked by failed checks: "
            + "; ".join(
                f"{o.name}: {o.description} (aid ranges {sorted(o.failing)})" for o in blocking
            ),
            metadata={o.name: o.metadata.get("sample_aids", []) for o in blocking},
        )
    return gate


def gate_summary(gate: Sequence[RuleOutcome]) -> dict[str, dict[str, Any]]:
    """The gate's verdicts as the sidecar's `quality_gate`: per rule, its failing aid ranges."""
    return {
        outcome.name: {
            "passed": outcome.passed,
            "severity": outcome.severity.value,
            "description": outcome.description,
            "failing_aid_ranges": outcome.failing,
        }
        for outcome in gate
    }
