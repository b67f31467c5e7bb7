"""Splits texts into requests that respect a model's per-request limits.

Token counts come from `training_pipeline.core.text.estimate_tokens`, a deterministic overestimate
(0.5 token per ASCII character, 1.5 per other BMP character such as Chinese, 4 per emoji). The
plan is made lazily, batch by batch, so that if the server's `usage` ever shows more tokens than
we estimated (`token_scale() > 1`), the following batches are packed more loosely and still
stay under the server's per-request cap. A smaller real count never packs batches tighter: the
conservative estimate is what guarantees the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from training_pipeline.core.text import estimate_tokens


def plan_batches(
    texts: Sequence[str],
    max_inputs: int,
    max_tokens: int,
    token_scale: Callable[[], float] | None = None,
) -> Iterator[tuple[int, int, int]]:
    """Yield `(start, stop, estimated_tokens)` slices of `texts`, in order.

    A batch never holds more than `max_inputs` texts nor more than `max_tokens` estimated tokens
    (times `token_scale()` when that is above 1); a single text is never split (texts are
    truncated to the per-input limit beforehand, which is at most `max_tokens`).
    `estimated_tokens` is the plain estimate of the batch, unscaled.
    """
    start = 0
    tokens = 0
    scale = max(1.0, token_scale()) if token_scale else 1.0
    for index, text in enumerate(texts):
        cost = estimate_tokens(text)
        if index > start and (index - start >= max_inputs or (tokens + cost) * scale > max_tokens):
            yield start, index, tokens
            start, tokens = index, 0
            scale = max(1.0, token_scale()) if token_scale else 1.0
        tokens += cost
    if start < len(texts):
        yield start, len(texts), tokens
