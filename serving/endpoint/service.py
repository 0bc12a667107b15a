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
    ServiceUnavailable,
    UnknownOperation,
    ValidationError,
    check_invocation,
)
from .containers import Variant
from .messages import Request, Response
from .model_invocation import invoke_model
from .replies import Outcome, Reply, TimedOut, Unreachable
from .settings import EndpointSettings
from .upstream import Container

log = logging.getLogger("serving.endpoint")

PREFIX, SUFFIX = "/endpoints/", "/invocations"
#: Operations of the service model that this local API does not serve.
UNSERVED = {
    "/invocations-response-stream": "InvokeEndpointWithResponseStream",
    "/async-invocations": "InvokeEndpointAsync",
}


#: A UUID's version (4) and variant (RFC 4122's) bits: cleared, then set.
_UUID_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID_SET = 0x4000 << 64 | 0x8000 << 48


def _request_id() -> str:
    """A version 4 UUID, as the service's request ids are: from ``random``, which unlike
    ``uuid.uuid4`` makes no system call (an id needs no secret randomness)."""
    text = f"{random.getrandbits(128) & _UUID_CLEAR | _UUID_SET:032x}"
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
                    invoke_model(
                        variant, container, invocation, request.body, self.settings.timeout
                    ),
                    variant,
                    request_id,
                    respond,
                )
                return
            head = invocation.container_head("/invocations", container.host, request.body)
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
            return variant.unreachable(exc)
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
