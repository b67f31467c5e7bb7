"""The model checks of `training-pipeline doctor` (one real embedding call per model), and the
whole report in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from training_pipeline.cli.doctor_checks import (
    CheckOutcome,
    _first_line,
    check_database,
    fail,
    ok,
    skip,
)

if TYPE_CHECKING:  # the resources are Dagster's; the checks only call their methods
    from training_pipeline.defs.resources import (
        EmbeddingModelsResource,
        PostgresResource,
        VideoSourceResource,
    )

DOCTOR_TEXT = "training-pipeline doctor: 初音未来 新曲《星之歌》 VOCALOID"


def check_models(
    models: EmbeddingModelsResource, *, only: str | None = None, skip_calls: bool = False
) -> Iterator[CheckOutcome]:
    """The models file, then one real one-text embedding call per model, sizes compared."""
    from training_pipeline.core.models_config import ModelsConfigError

    try:
        config = models.config()
    except ModelsConfigError as error:
        yield fail("models file", "; ".join(str(error).splitlines()))
        return
    count = len(config.models)
    yield ok(
        "models file",
        f"{models.config_path}: {count} model{'s' if count != 1 else ''}, "
        f"default {config.default_model}",
    )
    if only is not None:
        try:
            config.get(only)
        except ModelsConfigError as error:
            yield fail(f"model {only}", str(error))
            return
        names = [only]
    else:
        names = list(config.models)
    for name in names:
        if skip_calls:
            yield skip(f"model {name}", "not called (--skip-models)")
        else:
            yield check_model(models, name)


def check_model(models: EmbeddingModelsResource, name: str) -> CheckOutcome:
    """Embed one text with the model's real client and compare the vector's size."""
    import openai

    from training_pipeline.embedding.clients import MissingApiKeyError
    from training_pipeline.embedding.validation import InvalidEmbeddingResponse, validate_vectors

    label = f"model {name}"
    model = models.model(name)
    try:
        client = models.client(name)
    except MissingApiKeyError as error:
        return fail(label, str(error))
    scrub = getattr(client, "scrub", lambda message: message)
    where = client.endpoint
    started = time.monotonic()
    try:
        answer = client.embed([DOCTOR_TEXT])
        validate_vectors(answer.vectors, 1, model.dimensions)
    except InvalidEmbeddingResponse as error:
        return fail(label, f"{where}: unusable answer: {error} (configured: {model.dimensions})")
    except openai.APIStatusError as error:
        return fail(label, f"{where} answered HTTP {error.status_code}: {scrub(str(error))}")
    except (openai.APIConnectionError, openai.APITimeoutError) as error:
        return fail(label, f"cannot reach {where}: {scrub(_first_line(error))}")
    except Exception as error:
        return fail(label, f"{where}: {type(error).__name__}: {scrub(_first_line(error))}")
    seconds = time.monotonic() - started
    return ok(
        label,
        f"{model.dimensions}-d vector as configured ({model.type}, {where}, {seconds:.2f} s)",
    )


def run_doctor(
    postgres: PostgresResource,
    video_source: VideoSourceResource,
    models: EmbeddingModelsResource,
    *,
    model: str | None = None,
    skip_models: bool = False,
) -> Iterator[CheckOutcome]:
    """Every check, in report order."""
    yield from check_database(postgres, video_source)
    yield from check_models(models, only=model, skip_calls=skip_models)
