"""A kept labelled dataset range's cache state is recorded with its rows and the model's cache
version, and the next decision reuses it instead of joining the range's checksums with the
cache again; a cache row changed since (a vector replaced, as `force_regenerate` does) is
another cache version, so the state is computed again and the range rebuilt. Real
PostgreSQL, the bundled model, real Dagster materializations."""

from __future__ import annotations

from training_pipeline.defs.assets import labelled_dataset_reuse
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    _bound as _bound,  # the hand-made rows' inconsistent share (an autouse fixture)
)
from training_pipeline_tests.integration.defs.test_unchanged_partitions import (
    _vector_replaced,
    build_everything,
    dataset_only,
    per_range,
)
from training_pipeline_tests.support.sample_rows import RANGE_KEYS


def joined(defs, instance, monkeypatch) -> tuple[object, list[str]]:
    """A dataset run, and the ranges whose cache state it joined with the cache."""
    ranges: list[str] = []
    compute = labelled_dataset_reuse.stored_partitions
    with monkeypatch.context() as patched:
        patched.setattr(
            labelled_dataset_reuse,
            "stored_partitions",
            lambda connection, dataset, cache, identity, keys: (
                ranges.extend(keys) or compute(connection, dataset, cache, identity, keys)
            ),
        )
        result = dataset_only(defs, instance)
    return result, sorted(ranges)


def test_a_kept_range_reuses_its_recorded_cache_state_until_the_cache_changes(
    source_data, database_url, instance, models_toml, defs_for, monkeypatch
):
    defs = defs_for(models_toml)
    build_everything(defs, instance)
    kept, computed = joined(defs, instance, monkeypatch)
    assert computed == sorted(RANGE_KEYS)  # nothing recorded yet: computed, then recorded
    assert all(per_range(kept)[key]["partition_unchanged"] for key in RANGE_KEYS)
    again, computed = joined(defs, instance, monkeypatch)
    assert computed == []
    assert all(per_range(again)[key]["partition_unchanged"] for key in RANGE_KEYS)
    assert per_range(again) == per_range(kept)
    _vector_replaced(database_url)  # a cache row of the first range: a new cache version
    changed, computed = joined(defs, instance, monkeypatch)
    assert computed == sorted(RANGE_KEYS)
    assert per_range(changed)[RANGE_KEYS[0]]["partition_unchanged"] is False
    assert per_range(changed)[RANGE_KEYS[1]]["partition_unchanged"] is True
