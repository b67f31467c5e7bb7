"""An import's counts: they add up batch by batch, survive the JSON of `cache_imports`, and read
as one line with every reason named."""

from __future__ import annotations

import json

from training_pipeline.storage.cache_imports import ImportCounts


def test_counts_add_round_trip_and_read_as_one_line():
    first = ImportCounts(
        rows=10, imported=6, already_cached=1, rejected_by_reason={"zero_vector": 3}
    )
    second = ImportCounts(
        rows=5,
        imported=2,
        already_cached=0,
        rejected_by_reason={"zero_vector": 1, "wrong_size": 2},
        wrong_sizes={1536: 2},
    )
    total = first + second
    assert (total.rows, total.imported, total.already_cached, total.rejected) == (15, 8, 1, 6)
    assert total.rows == total.imported + total.already_cached + total.rejected
    assert ImportCounts.from_json(json.loads(total.to_json())) == total
    assert total.describe(1024) == (
        "imported 8, already cached 1, rejected 6 (wrong size: 2 (not 1024-d: 1536-d: 2); "
        "all-zero vector: 4)"
    )
    assert ImportCounts().describe(1024, "would import") == (
        "would import 0, already cached 0, rejected 0"
    )
