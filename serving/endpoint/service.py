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
from .upstream import Container, Reply, TimedOut, Unreachable

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
        variant = self._variant(invocation, request_id)
        container = variant.container
        if container is None:
            raise ServiceUnavailable(
                f"The container of variant {variant.name} of endpoint {name} is being "
                "replaced; try again."
            )
        if variant.models_dir is not None:
            reply = await self._invoke_model(variant, container, invocation, request.body)
        else:
            head = self._upstream_head(invocation, "/invocations", container.host, request.body)
            reply = await self._call(variant, container, [head, request.body])
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

    async def _call(self, variant: Variant, container: Container, parts: list[bytes]) -> Reply:
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
        self, variant: Variant, container: Container, invocation: Invocation, body: bytes
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
            text = exc.reply.body.decode("utf-8", errors="replace")
            raise ModelError(name, variant.log_stream, exc.reply.status, text) from None
        except Unreachable as exc:
            raise self._unreachable(variant, exc) from None
        except TimedOut:
            raise ModelError(name, variant.log_stream, 0, "") from None

    @staticmethod
    def _no_such_model(variant: Variant, target_model: str) -> ValidationError:
        assert variant.models_dir is not None
        return ValidationError(
            f"Failed to download model data(models directory: {variant.models_dir.local}, "
            f"key: {target_model}). Please ensure that there is a model directory at that "
            "path in the models directory (a TargetModel ending in .tar.gz names the "
            "directory without it)."
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
    def _upstream_head(invocation: Invocation, path: str, host: str, body: bytes) -> bytes:
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
