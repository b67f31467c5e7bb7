"""The demo's one progress line across all aid ranges: texts embedded of all to embed, one ETA.

The demo materializes range after range, and each embedding step reports only its own range.
So the demo counts up front, cheaply, what all ranges will embed (the labelled videos' texts as
the pipeline cuts them for the model, less what is cached; seconds for thousands of videos),
then follows each step's progress lines in process (`progress_listener`) and adds what the
finished ranges embedded (their `new_embeddings`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pandas as pd

from training_pipeline.core.aid_ranges import AidRange
from training_pipeline.core.labels import attributed
from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import format_text_v1, model_inputs, text_checksum
from training_pipeline.embedding.clients import model_identity
from training_pipeline.embedding.progress import ProgressUpdate, format_duration, format_eta
from training_pipeline.embedding.tokens import input_rule
from training_pipeline.storage.embedding_cache import EmbeddingCache


def count_texts_to_embed(
    postgres, video_source, model_name: str, model: EmbeddingModelConfig, keys: Sequence[str]
) -> tuple[int, int]:
    """(distinct texts still to embed, distinct texts) of the labelled videos in these ranges.

    Selected and cut as `embedding_cache__<model>` does with its default `labelled` scope: the
    videos with a vote, their `v1` text when not empty, truncated by the model's input rule.
    """
    rows = []
    with postgres.connect() as connection:
        for key in keys:
            aid_range = AidRange.from_key(key)
            labels = video_source.tables.read_label_rows(connection, aid_range)
            voted = set(labels.loc[attributed(labels), "aid"].tolist())
            videos = video_source.tables.read_video_text(connection, aid_range)
            for aid, title, description, tags in videos.itertuples(index=False):
                if aid in voted:
                    text = format_text_v1(title, description, tags)
                    rows.append((aid, text, text_checksum(text)))
        texts = pd.DataFrame(rows, columns=["aid", "text", "checksum"])
        distinct = model_inputs(texts, input_rule(model))["input_checksum"].unique().tolist()
        cache = EmbeddingCache(connection, postgres.schema, model_identity(model_name, model))
        cache.ensure_table()
        cached = cache.cached_checksums(distinct)
    return len(distinct) - len(cached), len(distinct)


class OverallProgress:
    """Prints `overall: done/total texts embedded (...%), rate, elapsed, ETA` across ranges."""

    def __init__(
        self,
        total: int,
        echo: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.echo = echo
        self.clock = clock
        self.started = clock()
        self.finished_ranges = 0  # texts embedded by the ranges already done

    def line(self, done: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        percent = 100.0 * done / self.total if self.total else 100.0
        return (
            f"overall: {done}/{self.total} texts embedded ({percent:.0f}%), {rate:.1f} texts/s, "
            f"elapsed {format_duration(elapsed)}, ETA {format_eta(self.total - done, rate)}"
        )

    def during_range(self, update: ProgressUpdate) -> None:
        """A progress line of the running range's embedding step (its last one is skipped: the
        range's end says the same)."""
        if update.done < update.total:
            self.echo("    " + self.line(self.finished_ranges + update.done))

    def range_done(self, new_embeddings: int) -> None:
        self.finished_ranges += new_embeddings
        self.echo("    " + self.line(self.finished_ranges))
