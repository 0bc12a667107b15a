"""``InvokeEndpoint`` itself: the route, the signature (when asked for), validation, the choice
of production variant, the call to its container, and every outcome as the service answers it.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Mapping, Sequence
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
from .connection import Request, Response
from .containers import Variant
from .settings import EndpointSettings
from .upstream import TimedOut, Unreachable

log = logging.getLogger("serving.endpoint")

PREFIX, SUFFIX = "/endpoints/", "/invocations"
#: Operations of the service model that this local API does not serve.
UNSERVED = {
    "/invocations-response-stream": "InvokeEndpointWithResponseStream",
    "/async-invocations": "InvokeEndpointAsync",
}


class Service:
    def __init__(
        self, settings: EndpointSettings, endpoints: Mapping[str, Sequence[Variant]]
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.max_body = settings.max_payload_bytes
        # weights per endpoint, for random.choices (what SageMaker's routing does)
        self._weights = {name: [v.weight for v in variants] for name, variants in endpoints.items()}

    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            return await self._invoke(request, request_id)
        except ApiError as exc:
            return self._error(exc, request_id)
        except Exception:
            log.exception("InternalFailure answering request %s", request_id)
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

    async def _invoke(self, request: Request, request_id: str) -> Response:
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
        variant = self._variant(invocation)
        container = variant.container
        if container is None:
            raise ServiceUnavailable(
                f"The container of variant {variant.name} of endpoint {name} is being "
                "replaced; try again."
            )
        try:
            reply = await container.request(
                [self._upstream_head(invocation, container.host, len(request.body)), request.body],
                settings.timeout,
            )
        except Unreachable as exc:
            raise ServiceUnavailable(
                f"The container of variant {variant.name} of endpoint {name} cannot be "
                f"reached ({exc}); try again."
            ) from None
        except TimedOut:
            raise ModelError(name, variant.log_stream, 0, "") from None
        if not 200 <= reply.status < 300:
            text = reply.body.decode("utf-8", errors="replace")
            raise ModelError(name, variant.log_stream, reply.status, text)
        headers = [("x-Amzn-Invoked-Production-Variant", variant.name)]
        content_type = reply.headers.get("content-type")
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        custom_attributes = reply.headers.get("x-amzn-sagemaker-custom-attributes")
        if custom_attributes is not None:
            headers.append(("X-Amzn-SageMaker-Custom-Attributes", custom_attributes))
        headers.append(("x-amzn-RequestId", request_id))
        return Response(200, headers, reply.body)

    def _variant(self, invocation: Invocation) -> Variant:
        name = invocation.endpoint
        variants = self.endpoints.get(name)
        if variants is None:
            raise ValidationError(f"Endpoint {name} of account {ACCOUNT} not found.")
        if invocation.target_model is not None:
            raise ValidationError(
                f"Endpoint {name} is not a multi-model endpoint: TargetModel applies only "
                "to multi-model endpoints, which serving endpoint does not run yet"
            )
        target = invocation.target_variant
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
    def _upstream_head(invocation: Invocation, host: str, length: int) -> bytes:
        # Only what the API defines reaches the container; the platform strips the rest.
        lines = [f"POST /invocations HTTP/1.1\r\nHost: {host}\r\n"]
        if invocation.content_type is not None:
            lines.append(f"Content-Type: {invocation.content_type}\r\n")
        if invocation.accept is not None:
            lines.append(f"Accept: {invocation.accept}\r\n")
        if invocation.custom_attributes is not None:
            lines.append(f"X-Amzn-SageMaker-Custom-Attributes: {invocation.custom_attributes}\r\n")
        lines.append(f"Content-Length: {length}\r\n\r\n")
        return "".join(lines).encode("latin-1")
