"""Headers between handlers and the wire: a request's headers for handlers to read, and the
response status, headers and custom attributes handlers set, checked before they are sent.

A value a header cannot carry (a control character, a line break, not a string) is the
handler's failure, a 500 that names it, on every path: sent raw, it would have broken the
response or been refused by gunicorn half-way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, TypeGuard

from handlers import InvocationContext
from handlers.base import CUSTOM_ATTRIBUTES
from handlers.errors import ModelFailed

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

#: What a response header's value may hold: visible ASCII and spaces, not at either end (the
#: platform's rule for custom attributes; gunicorn refuses control characters too).
HEADER_TEXT = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?|")
#: A header name: an RFC 9110 token.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Response headers serving writes itself; a handler's values for them are ignored.
SERVER_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type", "Content-Length", "Connection", "Date", "Server", "Transfer-Encoding",
        CUSTOM_ATTRIBUTES,
    )
)  # fmt: skip


class RequestHeaders(Mapping[str, str]):
    """A request's headers, read from its WSGI environ when asked; names case-insensitive."""

    __slots__ = ("_environ",)

    def __init__(self, environ: WSGIEnvironment) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._key(name))
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if isinstance(value, str) and (
                key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
            ):
                yield key.removeprefix("HTTP_").replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def sendable(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be sent as a header's value."""
    return isinstance(value, str) and HEADER_TEXT.fullmatch(value) is not None


def unsendable_attributes(handler: str, value: object) -> ModelFailed:
    return ModelFailed(
        f"{handler} set custom attributes that a header cannot carry ({type(value).__name__} "
        f"{ascii(value)[:40]}); {CUSTOM_ATTRIBUTES} takes visible ASCII and spaces"
    )


class ResponseFields:
    """The status and extra headers handlers set on their contexts, checked; the headers the
    server writes itself are left out, with a warning once per name (per worker)."""

    def __init__(self) -> None:
        self._ignored: set[str] = set()

    def of(self, handler: str, context: InvocationContext) -> tuple[int, list[tuple[str, str]]]:
        """``context``'s status and headers, or :class:`ModelFailed` naming ``handler`` for
        what cannot be sent."""
        status = context.response_status
        if status is None:
            status = HTTPStatus.OK
        elif not (isinstance(status, int) and 200 <= status <= 599 and status not in (204, 304)):
            raise ModelFailed(
                f"{handler} set the response status {ascii(status)[:40]}; "
                "it takes 200-599 (not 204 or 304, which carry no body)"
            )
        headers: list[tuple[str, str]] = []
        for name, value in (context.response_headers or {}).items():
            if not (isinstance(name, str) and HEADER_NAME.fullmatch(name)) or not sendable(value):
                raise ModelFailed(
                    f"{handler} set a response header that cannot be sent "
                    f"({ascii(name)[:40]}: {ascii(value)[:40]}); names are tokens, values "
                    "visible ASCII and spaces"
                )
            if name.lower() in SERVER_HEADERS:
                if name.lower() not in self._ignored:
                    self._ignored.add(name.lower())
                    log.warning(
                        "%s set the response header %s, which the server writes itself: ignored",
                        handler,
                        name,
                    )
                continue
            headers.append((name, value))
        return status, headers
