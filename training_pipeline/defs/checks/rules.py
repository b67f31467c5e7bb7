# Over 300 lines: every rule with its SQL and its verdict key in one place, shared by the checks
# and the snapshot's gate (the reuse machinery itself is in target.py).
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckSeverity, Failure
from psycopg import sql

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.defs.checks.target import (
    DUPLICATE_RULE,
    CheckTarget,
    PerRange,
    with_reuse,
)
from training_pipeline.settings import load_settings
from training_pipeline.storage.check_verdicts import combined_version, stored_rows
from training_pipeline.storage.fingerprints import label_fingerprints

SAMPLE = 10
VERDICT_REUSED = "verdict_reused_from_run_id"
"""Metadata of the rules that reuse verdicts: per range whose verdict was reused, the run that
evaluated it."""
LABEL_RULE = "every_labelled_video_has_a_row.1"
"""The label rule's versioned name in `check_verdicts` (bump it when its SQL changes)."""


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
    and the runs whose verdicts were reused. Its verdict key is the range's row versions, so a
    range whose rows are unchanged reads no vector."""
    versions = {key: rows.version for key, rows in target.stored().items()}
    per_range, reused = with_reuse(
        target, rule, versions, lambda fresh: _bad_rows_per_range(target, condition, params, fresh)
    )
    return _failing(per_range), _sample(per_range), reused


def _failing(per_range: PerRange) -> dict[str, int]:
    return {key: bad for key, (bad, _) in per_range.items() if bad}


def _sample(per_range: PerRange) -> list[int]:
    return sorted(aid for _, aids in per_range.values() for aid in aids)[:SAMPLE]


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
    ranges = [AidRange.from_key(key) for key in target.keys]
    # The verdict key: everything the query reads of the range (its dataset rows, its text
    # rows, its label rows) and the tie policy that decides whether a tie needs a row.
    texts = stored_rows(target.connection, target.preprocessed, target.keys)
    labels = label_fingerprints(target.connection, target.source_tables, ranges)
    dataset = target.stored()
    versions = {
        r.key: combined_version(
            dataset[r.key].version if r.key in dataset else "-",
            texts[r.key].version if r.key in texts else "-",
            labels[r.key],
            _ties_may_be_missing(target, r.key),
        )
        for r in ranges
    }
    per_range, reused = with_reuse(
        target, LABEL_RULE, versions, lambda fresh: _missing_rows(target, fresh)
    )
    failing = _failing(per_range)
    missing_total = sum(failing.values())
    return RuleOutcome(
        "every_labelled_video_has_a_row",
        missing_total == 0,
        AssetCheckSeverity.ERROR,
        f"{missing_total} labelled videos with text have no row",
        {"missing_rows": missing_total, "sample_aids": _sample(per_range), VERDICT_REUSED: reused},
        failing,
    )


def _ties_may_be_missing(target: CheckTarget, key: str) -> bool:
    # Only a range built with `exclude` may leave ties out; `negative` and `positive` label
    # them, so a missing tied row is a missing row.
    return target.tie_policies.get(key) == "exclude"


def _missing_rows(target: CheckTarget, keys: Sequence[str]) -> PerRange:
    """Per range of `keys` with labelled videos with text but no row: how many, a sample."""
    found: PerRange = {}
    for key in keys:
        aid_range = AidRange.from_key(key)
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
            "ties_may_be_missing": _ties_may_be_missing(target, key),
        }
        missing = [row[0] for row in target.connection.execute(query, params).fetchall()]
        if missing:
            found[key] = (len(missing), missing[:SAMPLE])
    return found


def no_duplicate_aids(target: CheckTarget) -> RuleOutcome:
    """No aid has more than one row, in these ranges or across ranges."""
    # A range's verdict depends on every other range's rows too (one of them may hold one of
    # its aids), so its key is the whole table's row versions; only passing verdicts are
    # reused (a failure's count of duplicated aids spans ranges, so it is counted afresh).
    version = target.table_version()
    duplicated: list[tuple[int, list[str]]] = []

    def evaluate(keys: list[str]) -> PerRange:
        query = sql.SQL(
            "SELECT aid, array_agg(aid_range) FROM {table}"
            " WHERE aid IN (SELECT aid FROM {table} WHERE aid_range = ANY(%s))"
            " GROUP BY aid HAVING count(*) > 1 ORDER BY aid"
        ).format(table=target.table)
        duplicated.extend(target.connection.execute(query, (keys,)).fetchall())
        found: PerRange = {}
        for aid, ranges in duplicated:
            for key in set(ranges) & set(keys):
                count, sample = found.get(key, (0, []))
                found[key] = (count + 1, sample if len(sample) >= SAMPLE else [*sample, aid])
        return found

    per_range, reused = with_reuse(
        target,
        DUPLICATE_RULE,
        dict.fromkeys(target.keys, version),
        evaluate,
        reuse_failed=False,
    )
    return RuleOutcome(
        "no_duplicate_aids",
        not duplicated,
        AssetCheckSeverity.ERROR,
        f"{len(duplicated)} aids have more than one row",
        {
            "duplicated_aids": len(duplicated),
            "sample_aids": [aid for aid, _ in duplicated[:SAMPLE]],
            VERDICT_REUSED: reused,
        },
        _failing(per_range),
    )


def inconsistent_share_within_bound(target: CheckTarget) -> RuleOutcome:
    """The share of rows with disagreeing annotators stays under the bound (warning)."""
    bound = load_settings().max_inconsistent_share
    per_range = target.stored()  # counted in the scan that reads the row versions
    rows = sum(stored.rows for stored in per_range.values())
    inconsistent = sum(stored.flagged for stored in per_range.values())
    share = inconsistent / rows if rows else 0.0
    failing = {
        key: stored.flagged
        for key, stored in per_range.items()
        if stored.rows and stored.flagged / stored.rows > bound
    }
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
