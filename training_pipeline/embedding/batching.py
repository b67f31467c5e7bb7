"""Splits texts into requests that respect a model's per-request limits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from training_pipeline.text import estimate_tokens


def plan_batches(
    texts: Sequence[str], max_inputs: int, max_tokens: int
) -> Iterator[tuple[int, int, int]]:
    """Yield `(start, stop, estimated_tokens)` slices of `texts`, in order.

    A batch never holds more than `max_inputs` texts nor more than `max_tokens` estimated tokens;
    a single text is never split (texts are truncated to the per-input limit beforehand, which is
    at most `max_tokens`).
    """
    start = 0
    tokens = 0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text)
        if index > start and (index - start >= max_inputs or tokens + cost > max_tokens):
            yield start, index, tokens
            start, tokens = index, 0
        tokens += cost
    if start < len(texts):
        yield start, len(texts), tokens
