"""``InvokeEndpoint`` itself: the route, the signature (when asked for), validation, the choice
of production variant, the call to its container, and every outcome as the service answers it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from urllib.parse import unquote

from . import sigv4
from .api import (
    ACCOUNT,
    ApiError,
    InternalFailure,
    Invocation,
    ModelError,
    ModelNotReady,
    ServiceUnavailable,
    UnknownOperation,
    ValidationError,
    check_invocation,
)
from .connection import Request, Response
from .containers import Variant
from .settings import EndpointSettings
from .targets import ContainerModels, LoadFailed, NotFound, Target
from .upstream import Container, Outcome, Reply, TimedOut, Unreachable

log = logging.getLogger("serving.endpoint")

PREFIX, SUFFIX = "/endpoints/", "/invocations"
#: Operations of the service model that this local API does not serve.
UNSERVED = {
    "/invocations-response-stream": "InvokeEndpointWithResponseStream",
    "/async-invocations": "InvokeEndpointAsync",
}


def _request_id() -> str:
    """A version 4 UUID, as the service's request ids are: from ``random``, which unlike
    ``uuid.uuid4`` makes no system call (an id needs no secret randomness)."""
    number = random.getrandbits(128)
    number = number & ~(0xF000 << 64) | 0x4000 << 64  # the version, 4
    number = number & ~(0xC000 << 48) | 0x8000 << 48  # the variant, RFC 4122's
    text = f"{number:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Service:
    def __init__(
        self, settings: EndpointSettings, endpoints: Mapping[str, Sequence[Variant]]
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.max_body = settings.max_payload_bytes
        # weights per endpoint, for random.choices (what SageMaker's routing does)
        self._weights = {name: [v.weight for v in variants] for name, variants in endpoints.items()}

    def start(self, request: Request, respond: Callable[[Response], None]) -> None:
        """Answer ``request``: ``respond`` gets the answer, once; at once when the API answers
        itself (an error), else when the container's answer comes. A single-model variant's
        request goes to its container from here, and the answer is made in the callback that
        receives the container's (no task: see :meth:`.upstream.Container.start`)."""
        request_id = _request_id()
        try:
            invocation, variant, container = self._route(request, request_id)
            if variant.models_dir is not None:
                self._in_task(
                    self._invoke_model(variant, container, invocation, request.body),
                    variant,
                    request_id,
                    respond,
                )
                return
            head = self._upstream_head(invocation, "/invocations", container.host, request.body)
            container.start(
                [head, request.body],
                self.settings.timeout,
                lambda outcome: respond(self._answer(variant, request_id, outcome)),
            )
        except Exception as exc:  # noqa: BLE001 - the catch-all: _failure logs it, answers 500
            respond(self._failure(exc, request_id))

    def _in_task(
        self,
        invoking: Coroutine[None, None, Reply],
        variant: Variant,
        request_id: str,
        respond: Callable[[Response], None],
    ) -> None:
        def finished(task: asyncio.Task[Reply]) -> None:
            if task.cancelled():  # the command is stopping
                return
            exc = task.exception()
            if exc is not None and not isinstance(exc, Exception):
                raise exc
            respond(self._answer(variant, request_id, task.result() if exc is None else exc))

        asyncio.get_running_loop().create_task(invoking).add_done_callback(finished)

    def _answer(self, variant: Variant, request_id: str, outcome: Outcome) -> Response:
        """The answer to the caller, from the container's (or the reason there is none)."""
        try:
            if isinstance(outcome, Exception):
                raise self._api_error(variant, outcome)
            reply = outcome
            if not 200 <= reply.status < 300:
                text = str(reply.body, "utf-8", "replace")
                raise ModelError(variant.endpoint, variant.log_stream, reply.status, text)
            headers = [("x-Amzn-Invoked-Production-Variant", variant.name)]
            content_type = reply.headers.get("content-type")
            if content_type is not None:
                headers.append(("Content-Type", content_type))
            custom_attributes = reply.headers.get("x-amzn-sagemaker-custom-attributes")
            if custom_attributes is not None:
                headers.append(("X-Amzn-SageMaker-Custom-Attributes", custom_attributes))
            headers.append(("x-amzn-RequestId", request_id))
            return Response(200, headers, reply.body, reply.buffer)
        except Exception as exc:  # noqa: BLE001 - the catch-all: _failure logs it, answers 500
            return self._failure(exc, request_id)

    def _api_error(self, variant: Variant, exc: Exception) -> Exception:
        """What the caller is told of an exchange with the container that failed."""
        if isinstance(exc, Unreachable):
            return self._unreachable(variant, exc)
        if isinstance(exc, TimedOut):
            return ModelError(variant.endpoint, variant.log_stream, 0, "")
        return exc

    def _failure(self, exc: Exception, request_id: str) -> Response:
        if isinstance(exc, ApiError):
            return self._error(exc, request_id)
        log.error("InternalFailure answering request %s", request_id, exc_info=exc)
        return self._error(InternalFailure("An internal failure occurred."), request_id)

    def _error(self, error: ApiError, request_id: str) -> Response:
        level = (
            logging.INFO if error.status < 500 and error.code != "ModelError" else logging.WARNING
        )
        log.log(
            level, "%s %d: %s (request %s)", error.code, error.status, error.message, request_id
        )
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", error.code),
        ]
        return Response(error.status, headers, error.body())

    def _endpoint_name(self, request: Request) -> str:
        path = request.target.partition("?")[0]
        if path.startswith(PREFIX):
            for suffix, operation in UNSERVED.items():
                if path.endswith(suffix):
                    raise UnknownOperation(f"{operation} is not served by serving endpoint")
            name = path[len(PREFIX) : -len(SUFFIX)]
            if path.endswith(SUFFIX) and "/" not in name and request.method == "POST":
                return unquote(name)
        raise UnknownOperation(
            f"No operation at {request.method} {path}: serving endpoint serves InvokeEndpoint, "
            "POST /endpoints/{EndpointName}/invocations"
        )

    def _route(self, request: Request, request_id: str) -> tuple[Invocation, Variant, Container]:
        """The request checked (route, signature, members), its variant and its container."""
        name = self._endpoint_name(request)
        settings = self.settings
        if settings.verify_signature and request.body_length <= self.max_body:
            assert settings.access_key_id
            assert settings.secret_access_key
            sigv4.verify(
                request.method,
                request.target,
                request.headers,
                request.body,
                settings.access_key_id,
                settings.secret_access_key,
            )
        invocation = check_invocation(name, request.headers, request.body_length, self.max_body)
        variant = self._variant(invocation, request_id)
        container = variant.container
        if container is None:
            raise ServiceUnavailable(
                f"The container of variant {variant.name} of endpoint {name} is being "
                "replaced; try again."
            )
        return invocation, variant, container

    async def _call(
        self, variant: Variant, container: Container, parts: list[bytes | memoryview]
    ) -> Reply:
        try:
            return await container.request(parts, self.settings.timeout)
        except Unreachable as exc:
            raise self._unreachable(variant, exc) from None
        except TimedOut:
            raise ModelError(variant.endpoint, variant.log_stream, 0, "") from None

    @staticmethod
    def _unreachable(variant: Variant, exc: Unreachable) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"The container of variant {variant.name} of endpoint {variant.endpoint} cannot "
            f"be reached ({exc}); try again."
        )

    async def _invoke_model(
        self,
        variant: Variant,
        container: Container,
        invocation: Invocation,
        body: bytes | memoryview,
    ) -> Reply:
        """A multi-model variant's invocation: the target model loaded first if the container
        has not got it (unloading the least recently used ones while it answers 507), and
        loaded again if the container turns out to have lost it (restarted)."""
        assert variant.models_dir is not None
        assert invocation.target_model is not None
        target = variant.models_dir.target(invocation.target_model)
        if target is None:
            raise self._no_such_model(variant, invocation.target_model)
        models = variant.models(container)
        path = f"/models/{target.name}/invoke"
        parts = [self._upstream_head(invocation, path, container.host, body), body]
        for attempt in (1, 2):
            await self._load(variant, models, target, invocation.target_model)
            models.in_flight[target.name] += 1
            try:
                reply = await self._call(variant, container, parts)
            finally:
                models.in_flight[target.name] -= 1
            if reply.status != 404 or attempt == 2:
                models.used(target)
                return reply
            # not loaded after all: the container restarted, or something unloaded it
            log.info("%s: model %s was not loaded; loading it", variant, target.relative)
            models.forget(target)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load(
        self, variant: Variant, models: ContainerModels, target: Target, target_model: str
    ) -> None:
        name = variant.endpoint
        try:
            await models.ensure_loaded(target, self.settings.timeout)
        except TimeoutError:
            raise ModelNotReady(
                f"Model {target_model} is not ready yet for endpoint {name}: it is still "
                "being loaded; try again."
            ) from None
        except NotFound:
            raise self._no_such_model(variant, target_model) from None
        except LoadFailed as exc:
            text = str(exc.reply.body, "utf-8", "replace")
            raise ModelError(name, variant.log_stream, exc.reply.status, text) from None
        except Unreachable as exc:
            raise self._unreachable(variant, exc) from None
        except TimedOut:
            raise ModelError(name, variant.log_stream, 0, "") from None

    @staticmethod
    def _no_such_model(variant: Variant, target_model: str) -> ValidationError:
        """The service's answer for a TargetModel with no model.tar.gz under the variant's
        ModelDataUrl prefix (a ValidationError, 400, naming bucket and key; not
        ModelNotReadyException, which is for a model still loading): here the models
        directory is the bucket and prefix."""
        assert variant.models_dir is not None
        return ValidationError(
            f"Failed to download model data (bucket: {variant.models_dir.local}, key: "
            f"{target_model}). Please ensure that there is a model directory at that key in "
            "the models directory (a key ending in .tar.gz names the directory without it)."
        )

    def _variant(self, invocation: Invocation, request_id: str) -> Variant:
        name = invocation.endpoint
        variants = self.endpoints.get(name)
        if variants is None:
            raise ValidationError(f"Endpoint {name} of account {ACCOUNT} not found.")
        variant = self._pick(name, variants, invocation.target_variant)
        if invocation.target_model is not None and variant.models_dir is None:
            raise ValidationError(
                f"Endpoint {name} is not a multi-model endpoint and does not support target "
                "model header.",
                "TARGET_MODEL_HEADER_NOT_SUPPORTED",
            )
        if invocation.target_model is None and variant.models_dir is not None:
            raise ValidationError(f"Request {request_id} is missing a target model header.")
        return variant

    def _pick(self, name: str, variants: Sequence[Variant], target: str | None) -> Variant:
        if target is not None:
            for variant in variants:
                if variant.name == target:
                    return variant
            known = ", ".join(variant.name for variant in variants)
            raise ValidationError(
                f"The variant {target} does not exist for endpoint {name} of account "
                f"{ACCOUNT}; its variants: {known}."
            )
        if len(variants) == 1:
            return variants[0]
        return random.choices(variants, self._weights[name])[0]  # noqa: S311 - routing

    @staticmethod
    def _upstream_head(
        invocation: Invocation, path: str, host: str, body: bytes | memoryview
    ) -> bytes:
        # Only what the API defines reaches the container; the platform strips the rest.
        lines = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"]
        if invocation.content_type is not None:
            lines.append(f"Content-Type: {invocation.content_type}\r\n")
        if invocation.accept is not None:
            lines.append(f"Accept: {invocation.accept}\r\n")
        if invocation.custom_attributes is not None:
            lines.append(f"X-Amzn-SageMaker-Custom-Attributes: {invocation.custom_attributes}\r\n")
        if invocation.target_model is not None:
            lines.append(f"X-Amzn-SageMaker-Target-Model: {invocation.target_model}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "".join(lines).encode("latin-1")
