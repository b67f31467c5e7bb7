"""Text format v1, checksums and the truncation rule."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from training_pipeline.core.text import (
    InputRule,
    estimate_tokens,
    format_text_v1,
    model_inputs,
    text_checksum,
    truncate_for_model,
)


def test_v1_strips_drops_empty_parts_and_joins_with_newlines():
    assert format_text_v1(" 标题 ", " 描述\n", " a,b ") == "标题\n描述\na,b"
    assert format_text_v1("标题", None, "tag") == "标题\ntag"
    assert format_text_v1("标题", "", "   ") == "标题"
    assert format_text_v1(None, None, None) == ""
    assert format_text_v1("\u3000", " ", "") == ""  # full-width space is whitespace too


def test_checksum_is_md5_of_utf8():
    text = "初音未来 🎵"
    assert text_checksum(text) == hashlib.md5(text.encode("utf-8")).hexdigest()
    # The old service's cache key for this text: unchanged format, unchanged checksum.
    assert text_checksum("标题\ntag") == hashlib.md5("标题\ntag".encode()).hexdigest()


def test_estimate_is_conservative_per_script():
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("测试") == 3
    assert estimate_tokens("🎵") == 4
    assert estimate_tokens("") == 1


def test_truncation_is_a_deterministic_prefix_within_budget():
    text = "视频描述" * 500 + "🎵" * 10
    cut = truncate_for_model(text, 512)
    assert text.startswith(cut)
    assert estimate_tokens(cut) <= 512
    assert estimate_tokens(text[: len(cut) + 1]) > 512
    assert truncate_for_model(text, 512) == cut
    assert truncate_for_model("short", 512) == "short"


def test_truncation_never_splits_an_emoji_budget():
    assert truncate_for_model("ab🎵cd", 4) == "ab"  # 0.5 + 0.5 + 4 > 4


def test_model_inputs_keep_checksum_unless_truncated_and_drop_empty_texts():
    long_text = "长" * 1000
    texts = pd.DataFrame(
        {
            "aid": [1, 2, 3],
            "text": ["短文本", long_text, ""],
            "checksum": [text_checksum("短文本"), text_checksum(long_text), text_checksum("")],
        }
    )
    inputs = model_inputs(texts, InputRule(512))
    assert inputs["aid"].tolist() == [1, 2]
    assert inputs["input_checksum"].iloc[0] == text_checksum("短文本")
    assert inputs["truncated"].tolist() == [False, True]
    assert inputs["input_checksum"].iloc[1] == text_checksum(inputs["input_text"].iloc[1])
    assert len(inputs["input_text"].iloc[1]) == 341


class WordCounter:
    """A tokenizer stand-in: one token per space-separated word, plus 3 it adds to every input
    (like a prefix and two special tokens); counts every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, text: str) -> int:
        self.calls += 1
        return 3 + len(text.split())


def test_with_a_models_counter_the_cut_is_the_longest_prefix_its_count_fits():
    count = WordCounter()
    text = " ".join(f"w{index}" for index in range(1000))
    cut = truncate_for_model(text, 512, count)
    assert text.startswith(cut)
    assert count(cut) <= 512 < count(text[: len(cut) + 1])
    assert count(cut) == 512  # the whole window, not the estimate's share of it
    assert truncate_for_model(text, 512, WordCounter()) == cut  # deterministic
    assert len(cut) > len(truncate_for_model(text, 512))  # the estimate cuts far shorter
    short = WordCounter()
    assert truncate_for_model("three short words", 512, short) == "three short words"
    assert short.calls == 1  # a text that fits is counted once, not bisected


def test_a_window_smaller_than_what_the_model_adds_is_an_error_not_an_empty_input():
    with pytest.raises(ValueError, match="the model adds 3 tokens"):
        truncate_for_model("a b c d", 2, WordCounter())


def test_model_inputs_cut_by_the_rules_counter_and_key_by_the_cut_text():
    long_text = " ".join(["词"] * 600)
    texts = pd.DataFrame(
        {
            "aid": [1, 2],
            "text": ["短 文本", long_text],
            "checksum": ["c1", text_checksum(long_text)],
        }
    )
    inputs = model_inputs(texts, InputRule(512, WordCounter()))
    assert inputs["truncated"].tolist() == [False, True]
    assert inputs["input_checksum"].iloc[0] == "c1"
    cut = inputs["input_text"].iloc[1]
    assert WordCounter()(cut) == 512 and inputs["input_checksum"].iloc[1] == text_checksum(cut)
