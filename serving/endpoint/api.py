"""The service's side of ``InvokeEndpoint`` (sagemaker-runtime 2017-05-13): what a request
may carry, and the errors, in the rest-json form botocore parses.

botocore takes an error's code from the ``x-amzn-ErrorType`` header and its message from the
JSON body's ``message``; for a modeled error (``ModelError``) it also reads the shape's members
from the body (``OriginalStatusCode``...), so ``client.exceptions.ModelError`` carries them.
The limits are the service model's (``EndpointName``: 1-63 characters of
``^[a-zA-Z0-9](-*[a-zA-Z0-9])*$``; ``Content-Type``, ``Accept`` and custom attributes: 1,024
ASCII characters...); botocore checks none of them before sending, so the API does, and says
what is wrong in the service's words (``1 validation error detected: Value ... at
'endpointName' failed to satisfy constraint: ...``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

#: The account named in messages (there is none locally).
ACCOUNT = "000000000000"

#: What ``OriginalMessage`` (and every ``Message``) may hold, per the service model.
MAX_MESSAGE = 2048

NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
_NAME = re.compile(r"[a-zA-Z0-9](?:-*[a-zA-Z0-9])*\Z")
#: ``\A\S[\p{Print}]*\z`` (TargetModel, InferenceId), for ASCII text.
_PRINTABLE = re.compile(r"[!-~][ -~]*\Z")
PRINTABLE_PATTERN = r"\A\S[\p{Print}]*\z"
#: Custom attributes: visible ASCII, spaces and tabs (RFC 7230's field-value characters).
_VISIBLE = re.compile(r"[\t -~]*\Z")

# Request headers the API reads (lower case, as parsed); every other one is dropped.
CONTENT_TYPE = "content-type"
ACCEPT = "accept"
CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
TARGET_MODEL = "x-amzn-sagemaker-target-model"
TARGET_VARIANT = "x-amzn-sagemaker-target-variant"
TARGET_CONTAINER = "x-amzn-sagemaker-target-container-hostname"
INFERENCE_ID = "x-amzn-sagemaker-inference-id"


class ApiError(Exception):
    """An error the API answers, by its code in the service model."""

    code = "InternalFailure"
    status = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message[:MAX_MESSAGE]

    def fields(self) -> dict[str, object]:
        return {"message": self.message}

    def body(self) -> bytes:
        return json.dumps(self.fields()).encode()


class ValidationError(ApiError):
    code = "ValidationError"
    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        #: The body's ``ErrorCode``, where the service sends one.
        self.error_code = error_code

    def fields(self) -> dict[str, object]:
        if self.error_code is None:
            return super().fields()
        return {"ErrorCode": self.error_code, "message": self.message}


class ModelNotReady(ApiError):
    """A multi-model endpoint's target model is still loading (it goes on loading)."""

    code = "ModelNotReadyException"
    status = HTTPStatus.TOO_MANY_REQUESTS


class ServiceUnavailable(ApiError):
    code = "ServiceUnavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE


class InternalFailure(ApiError):
    pass


class UnknownOperation(ApiError):
    """A path or method that is no operation of the API (not in the service model)."""

    code = "UnknownOperationException"
    status = HTTPStatus.NOT_FOUND


class AccessDenied(ApiError):
    """A signature that is missing or wrong (``--verify-signature``); ``code`` is the one
    AWS answers for that case (``MissingAuthenticationTokenException``,
    ``InvalidSignatureException``, ``UnrecognizedClientException``)."""

    status = HTTPStatus.FORBIDDEN

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelError(ApiError):
    """The container answered a status other than 2xx, or nothing within the timeout
    (``original_status`` 0)."""

    code = "ModelError"
    status = HTTPStatus.FAILED_DEPENDENCY

    def __init__(
        self, endpoint: str, log_stream: str, original_status: int, original_message: str
    ) -> None:
        original = original_message[:MAX_MESSAGE]
        if original_status == 0:
            message = (
                "Your invocation timed out while waiting for a response from container "
                "primary. Review the latency metrics for each container, resolve the issue, "
                "and try again."
            )
        else:
            kind = "client" if original_status < 500 else "server"
            message = (
                f"Received {kind} error ({original_status}) from primary with message "
                f'"{original}". See {log_stream} in account {ACCOUNT} for more information.'
            )
        super().__init__(message)
        self.original_status = original_status
        self.original_message = original
        self.log_stream = log_stream

    def fields(self) -> dict[str, object]:
        return {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL"
            if 0 < self.original_status < 500
            else "SERVER_ERROR_FROM_MODEL",
            "LogStreamArn": self.log_stream,
            "Message": self.message,
            "OriginalMessage": self.original_message,
            "OriginalStatusCode": self.original_status,
        }


class Invocation(NamedTuple):
    """A valid request's parts that reach a container or choose one. (Immutable as a named
    tuple rather than a frozen dataclass: one is made per request, in a fifth of the time.)"""

    endpoint: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    target_variant: str | None
    target_model: str | None

    def container_head(self, path: str, host: str, body: bytes | memoryview) -> bytes:
        """The head of the request its container gets: only what the API defines reaches
        the container, as the platform strips the rest."""
        lines = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}\r\n")
        if self.accept is not None:
            lines.append(f"Accept: {self.accept}\r\n")
        if self.custom_attributes is not None:
            lines.append(f"X-Amzn-SageMaker-Custom-Attributes: {self.custom_attributes}\r\n")
        if self.target_model is not None:
            lines.append(f"X-Amzn-SageMaker-Target-Model: {self.target_model}\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        return "".join(lines).encode("latin-1")


def _shown(value: str) -> str:
    return value if len(value) <= 100 else value[:100] + "..."


_ASCII = re.compile(r"[\x00-\x7f]*\Z")


@dataclass(frozen=True)
class _Member:
    """A request member sent as a header, and its constraints in the service model."""

    name: str
    header: str
    max_length: int
    pattern: re.Pattern[str]
    pattern_text: str
    min_length: int = 0
    sensitive: bool = False

    def problem(self, value: str) -> str | None:
        """What is wrong with ``value``, in the service's words; ``None`` if nothing."""
        if self.min_length <= len(value) <= self.max_length and self.pattern.match(value):
            return None
        shown = "" if self.sensitive else f" '{_shown(value)}'"
        at = f"Value{shown} at '{self.name}' failed to satisfy constraint: Member must"
        if len(value) > self.max_length:
            return f"{at} have length less than or equal to {self.max_length}"
        if len(value) < self.min_length:
            return f"{at} have length greater than or equal to {self.min_length}"
        return f"{at} satisfy regular expression pattern: {self.pattern_text}"


_MEMBERS = (
    _Member("contentType", CONTENT_TYPE, 1024, _ASCII, r"\p{ASCII}*"),
    _Member("accept", ACCEPT, 1024, _ASCII, r"\p{ASCII}*"),
    _Member("customAttributes", CUSTOM_ATTRIBUTES, 1024, _VISIBLE, r"\p{ASCII}*", sensitive=True),
    _Member("targetModel", TARGET_MODEL, 1024, _PRINTABLE, PRINTABLE_PATTERN, min_length=1),
    _Member("targetVariant", TARGET_VARIANT, 63, _NAME, NAME_PATTERN),
    _Member("targetContainerHostname", TARGET_CONTAINER, 63, _NAME, NAME_PATTERN),
    _Member("inferenceId", INFERENCE_ID, 64, _PRINTABLE, PRINTABLE_PATTERN, min_length=1),
)
_ENDPOINT_NAME = _Member("endpointName", "", 63, _NAME, NAME_PATTERN, min_length=1)


def check_invocation(
    endpoint: str, headers: Mapping[str, str], body_length: int, max_body: int
) -> Invocation:
    """The request's parts, or :class:`ValidationError` naming every member out of bounds.

    ``headers`` are by lower-case name, values decoded as Latin-1 (what the wire holds)."""
    problems: list[str] = []
    problem = _ENDPOINT_NAME.problem(endpoint)
    if problem is not None:
        problems.append(problem)
    for member in _MEMBERS:
        value = headers.get(member.header)
        if value is not None and (problem := member.problem(value)) is not None:
            problems.append(problem)
    if body_length > max_body:
        problems.append(
            "Value at 'body' failed to satisfy constraint: Member must have length less "
            f"than or equal to {max_body}"
        )
    if problems:
        count = len(problems)
        raise ValidationError(
            f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
        )
    if headers.get(TARGET_CONTAINER) is not None:
        raise ValidationError(
            f"Endpoint {endpoint} does not use direct invocation: TargetContainerHostname "
            "applies only to multi-container endpoints, which serving endpoint does not run"
        )
    return Invocation(
        endpoint=endpoint,
        content_type=headers.get(CONTENT_TYPE),
        accept=headers.get(ACCEPT),
        custom_attributes=headers.get(CUSTOM_ATTRIBUTES),
        target_variant=headers.get(TARGET_VARIANT),
        target_model=headers.get(TARGET_MODEL),
    )
