"""Text of a video, its checksum, and the exact input an embedding model receives.

Format `v1` must stay byte-for-byte what the old service built, so that checksums match the
embeddings it cached: title, description and tags stripped, NULL as empty, empty parts dropped,
joined by a single newline, no prefixes. The checksum is the MD5 hex digest of the UTF-8 text.

The cache is keyed by the checksum of the text actually sent to a model. A text longer than the
model's per-input token limit is cut by `truncate_for_model`, a deterministic rule that depends
only on the text, the limit and the model's token counter (`InputRule`), so the same video
always maps to the same cache row; a text that fits is sent unchanged and keeps its `v1`
checksum. Models whose tokenizer we have (the bundled local one) are cut by its real count;
API models by a conservative estimate, since their tokenizers are not ours to run.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

TEXT_FORMAT = "v1"


def format_text_v1(title: str | None, description: str | None, tags: str | None) -> str:
    """Build the `v1` text of a video from its title, description and comma-joined tags."""
    parts = ((part or "").strip() for part in (title, description, tags))
    return "\n".join(part for part in parts if part)


def metadata_json(title: str | None, description: str | None, tags: str | None) -> str:
    """The video's source text fields as the trainer's `metadata_json` column.

    Exactly the old writer's object: `title`, `description` and `tags` as given, `""` for NULL.
    The trainer merges this object into every sample's metadata and PyTorch's `default_collate`
    rejects `None`, so a JSON `null` here would break training (see `dataset_contract`).
    """
    fields = {"title": title or "", "description": description or "", "tags": tags or ""}
    return json.dumps(fields, ensure_ascii=False)


def text_checksum(text: str) -> str:
    """MD5 hex digest of the UTF-8 text: the cache key the old service used."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def char_token_weights(text: str) -> np.ndarray:
    """Upper estimate of the tokens each character costs in common embedding tokenizers.

    ASCII runs at about 4 characters per token, Chinese at 1 to 1.3 tokens per character, and a
    character outside the Basic Multilingual Plane (emoji) at up to 4 tokens. We overestimate
    (0.5, 1.5 and 4 tokens) so that a request never exceeds a token limit; the embedder learns
    the real ratio from the `usage` the server returns. The weights are multiples of 0.5, so the
    sums below are exact in floating point and the rule is reproducible everywhere.
    """
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.where(code_points < 0x80, 0.5, np.where(code_points < 0x10000, 1.5, 4.0))


def estimate_tokens(text: str) -> int:
    """Conservative token count of a text (see `char_token_weights`); at least 1."""
    if text.isascii():
        return max(1, math.ceil(len(text) * 0.5))
    return max(1, math.ceil(float(char_token_weights(text).sum())))


ESTIMATE_MAX_TOKENS_PER_CHARACTER = 4
"""The most any character costs in the estimate (`char_token_weights`: an emoji)."""


def estimate_uncut_length(max_tokens: int) -> int:
    """The longest text the estimate never cuts for `max_tokens`, in characters: it fits even if
    every character were an emoji (the embedding step's SQL lookup relies on the same bound)."""
    return max_tokens // ESTIMATE_MAX_TOKENS_PER_CHARACTER


TokenCounter = Callable[[str], int]
"""Tokens a model feeds for a text, everything it adds included (prefixes, special tokens)."""


@dataclass(frozen=True)
class InputRule:
    """How one model's input is cut: its per-input window and who counts the tokens.

    `count_tokens` None means the conservative estimate (`estimate_tokens`). Every caller that
    needs a model's input checksums (the embedding step, the labelled dataset, the label sensor)
    builds the same rule from the model's config, so they agree on the exact text and its key.
    """

    max_tokens: int
    count_tokens: TokenCounter | None = None


def truncate_for_model(text: str, max_tokens: int, count_tokens: TokenCounter | None = None) -> str:
    """The longest prefix of `text` whose token count fits `max_tokens`.

    With `count_tokens` (a model's real tokenizer) the prefix is found by bisection over prefix
    lengths: a prefix's count grows with its length (a longer prefix may rarely count one token
    fewer, so the cut is where a prefix fits and the next longer one tried does not; the same
    text always gives the same cut). Without it, the conservative estimate is summed per
    character. Deterministic and independent of any learned state, so it can be part of the
    cache key.
    """
    if count_tokens is not None:
        return _truncate_by_counting(text, max_tokens, count_tokens)
    if len(text) <= estimate_uncut_length(max_tokens):
        return text
    used = np.cumsum(char_token_weights(text))
    fitting = int(np.searchsorted(used, max_tokens, side="right"))
    return text[:fitting]


def _truncate_by_counting(text: str, max_tokens: int, count_tokens: TokenCounter) -> str:
    if count_tokens(text) <= max_tokens:
        return text
    added = count_tokens("")
    if added > max_tokens:
        raise ValueError(
            f"max_tokens_per_input = {max_tokens} leaves no room for text: the model adds "
            f"{added} tokens (prefix, special tokens) to every input"
        )
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if count_tokens(text[:middle]) <= max_tokens:
            fits = middle
        else:
            too_long = middle
    return text[:fits]


def model_inputs(texts: pd.DataFrame, rule: InputRule) -> pd.DataFrame:
    """The exact input a model receives for each video, and that input's checksum (cache key).

    `texts` has `aid`, `text` and `checksum` (of the `v1` text), and may have `aid_range`, which
    is passed through; `rule` is the model's (`embedding.tokens.input_rule`). Videos with an
    empty text are dropped: there is nothing to embed (APIs reject empty input) and no vector to
    train on.
    """
    non_empty = texts[texts["text"].str.len() > 0]
    inputs = [
        truncate_for_model(text, rule.max_tokens, rule.count_tokens) for text in non_empty["text"]
    ]
    truncated = np.fromiter(
        (len(sent) < len(text) for sent, text in zip(inputs, non_empty["text"], strict=True)),
        dtype=bool,
        count=len(inputs),
    )
    checksums = [
        text_checksum(sent) if was_cut else original
        for sent, was_cut, original in zip(inputs, truncated, non_empty["checksum"], strict=True)
    ]
    # Object columns keep the str objects we already have; pandas' default string dtype
    # would copy every text into Arrow memory a second time.
    columns: dict[str, object] = {
        "aid": non_empty["aid"].to_numpy(dtype="int64"),
        "input_text": pd.Series(inputs, dtype=object),
        "input_checksum": pd.Series(checksums, dtype=object),
        "truncated": truncated,
    }
    if "aid_range" in non_empty.columns:
        columns["aid_range"] = non_empty["aid_range"].to_numpy(dtype=object)
    return pd.DataFrame(columns)
