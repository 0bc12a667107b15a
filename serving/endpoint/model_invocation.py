"""A multi-model variant's invocation, as SageMaker's front end makes it: the ``TargetModel``
found in the models directory, extracted if it is an archive and loaded if the container has
not got it (:mod:`.targets`, :mod:`.extractions`), then invoked, and loaded again if the
container turns out to have lost it; every failure on the way as the service answers it."""

from __future__ import annotations

import asyncio
import json
import logging

from .api import Invocation, ModelError, ModelNotReady, ServiceUnavailable, ValidationError
from .archive import ArchiveError, Cancelled
from .containers import Variant
from .replies import Reply, TimedOut, Unreachable
from .targets import ContainerModels, LoadFailed, NotFound, Target
from .upstream import Container

log = logging.getLogger("serving.endpoint")


async def invoke_model(
    variant: Variant,
    container: Container,
    invocation: Invocation,
    body: bytes | memoryview,
    timeout: float,
) -> Reply:
    """The container's answer to ``invocation`` for its target model: the model loaded first
    if the container has not got it (unloading the least recently used ones while it answers
    507), and loaded again if the container turns out to have lost it (restarted)."""
    assert variant.models_dir is not None
    assert invocation.target_model is not None
    target = variant.models_dir.target(invocation.target_model)
    if target is None:
        raise no_such_model(variant, invocation.target_model)
    models = variant.models(container)
    path = f"/models/{target.name}/invoke"
    parts = [invocation.container_head(path, container.host, body), body]
    for attempt in (1, 2):
        await _load(variant, models, target, invocation.target_model, timeout)
        models.in_flight[target.name] += 1
        try:
            reply = await _call(variant, container, parts, timeout)
        finally:
            models.in_flight[target.name] -= 1
        if reply.status != 404 or attempt == 2:
            models.used(target)
            return reply
        # not loaded after all: the container restarted, or something unloaded it
        log.info("%s: model %s was not loaded; loading it", variant, target.relative)
        models.forget(target)
    raise AssertionError("unreachable")  # pragma: no cover


async def _call(
    variant: Variant, container: Container, parts: list[bytes | memoryview], timeout: float
) -> Reply:
    try:
        return await container.request(parts, timeout)
    except Unreachable as exc:
        raise variant.unreachable(exc) from None
    except TimedOut:
        raise ModelError(variant.endpoint, variant.log_stream, 0, "") from None


async def _load(
    variant: Variant,
    models: ContainerModels,
    target: Target,
    target_model: str,
    timeout: float,
) -> None:
    """``target`` extracted (an archive) and loaded, within the invocation's timeout."""
    if target.name in models.loaded:
        models.used(target)
        return
    name = variant.endpoint
    assert variant.models_dir is not None
    extractions = variant.models_dir.extractions
    try:
        async with asyncio.timeout(timeout):
            if target.archive is not None:
                await extractions.extracted(target.archive, target.name)
            await models.ensure_loaded(target)
    except TimeoutError:
        raise ModelNotReady(
            f"Model {target_model} is not ready yet for endpoint {name}: it is still "
            "being loaded; try again."
        ) from None
    except ArchiveError as exc:  # as the container refuses a directory it cannot load
        message = json.dumps({"error": f"model {target_model!r} cannot be loaded: {exc}"})
        raise ModelError(name, variant.log_stream, 400, message) from None
    except Cancelled:
        raise ServiceUnavailable(f"Endpoint {name} is stopping.") from None
    except NotFound:
        extractions.forget(target.name)  # an archive's directory removed meanwhile
        raise no_such_model(variant, target_model) from None
    except LoadFailed as exc:
        text = str(exc.reply.body, "utf-8", "replace")
        raise ModelError(name, variant.log_stream, exc.reply.status, text) from None
    except Unreachable as exc:
        raise variant.unreachable(exc) from None
    except TimedOut:
        raise ModelError(name, variant.log_stream, 0, "") from None


def no_such_model(variant: Variant, target_model: str) -> ValidationError:
    """The service's answer for a TargetModel with no model.tar.gz under the variant's
    ModelDataUrl prefix (a ValidationError, 400, naming bucket and key; not
    ModelNotReadyException, which is for a model still loading): here the models directory
    is the bucket and prefix."""
    assert variant.models_dir is not None
    return ValidationError(
        f"Failed to download model data (bucket: {variant.models_dir.local}, key: "
        f"{target_model}). Please ensure that there is a model.tar.gz or a model directory at "
        "that key in the models directory (a key ending in .tar.gz also names the directory "
        "without it)."
    )
