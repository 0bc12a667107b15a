"""The one exception hierarchy of the framework.

Every error a request can meet is a :class:`ServingError` with its HTTP status as a class
attribute. ``serving`` maps the whole hierarchy to responses in one place, so handlers and
codecs raise these and never build responses themselves. The message is what the client
reads: say what was wrong (which input, the expected and the actual), never include a
traceback.
"""

from __future__ import annotations

from http import HTTPStatus


class ServingError(Exception):
    """Base of every error that becomes an HTTP response."""

    #: The response status; subclasses set it, an instance may carry its own (``status=``).
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, status: HTTPStatus | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InvalidInput(ServingError):
    """The body could not be decoded, or does not fit the model's declared inputs."""

    status = HTTPStatus.BAD_REQUEST


class RecordError(InvalidInput):
    """One record of a multi-record body is bad; ``line`` counts the body's lines from 1.

    Serving reads large bodies in pieces and moves ``line`` to the line's place in the
    whole body (:meth:`moved`), so the client learns which of its records to fix.
    """

    def __init__(self, media_type: str, line: int, reason: str) -> None:
        super().__init__(f"{media_type} line {line}: {reason}")
        self.media_type = media_type
        self.line = line
        self.reason = reason

    def moved(self, lines_before: int) -> RecordError:
        """The same error for a piece that starts after ``lines_before`` lines of the body."""
        return RecordError(self.media_type, self.line + lines_before, self.reason)


class DecodesTooLarge(InvalidInput):
    """The body decodes to more rows or bytes of arrays than the server takes: a 413, since
    the data may be valid and a smaller request would be served. An :class:`InvalidInput`
    still, so that a multi-record body's chunk past the row cap is answered in halves (see
    :mod:`handlers.records`)."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class PayloadTooLarge(ServingError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(ServingError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotAcceptable(ServingError):
    """No encoder satisfies the request's Accept, or the result cannot be written in it."""

    status = HTTPStatus.NOT_ACCEPTABLE


class ModelFailed(ServingError):
    """The model itself raised while running on valid input."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR


class NotReady(ServingError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class ModelLoadError(Exception):
    """The model could not be loaded; the worker exits with this message logged.

    Not a :class:`ServingError`: it never reaches a client, it stops the worker.
    """
