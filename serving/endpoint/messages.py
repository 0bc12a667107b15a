"""What the API's server hands its handler and gets back: a :class:`Request`, read whole, and
a :class:`Response`; and the bytes of a response's head."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus


@dataclass
class Request:
    method: str
    #: The request line's target as sent: path and query, percent-escapes kept.
    target: str
    #: By lower-case name; repeated headers joined with ``,`` (as SigV4 signs them).
    headers: dict[str, str]
    #: Valid until the request is answered (a view of a buffer used again afterwards).
    body: bytes | memoryview
    #: The declared body length; ``body`` is empty when it is over the limit (not kept).
    body_length: int


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | memoryview
    #: The pooled buffer ``body`` is a view of, given back once the answer is written.
    buffer: bytearray | None = None


#: Answers a request: calls its second argument with the answer, exactly once, at once or
#: later; never raises.
Handler = Callable[[Request, Callable[[Response], None]], None]

_REASONS = {status.value: status.phrase for status in HTTPStatus}
_date = ["", 0]


def _http_date() -> str:
    now = int(time.time())
    if now != _date[1]:
        _date[:] = [email.utils.formatdate(now, usegmt=True), now]
    return str(_date[0])


def encode_head(response: Response, keep_alive: bool) -> bytes:
    """The status line and headers, ``Date`` and ``Content-Length`` added."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in response.headers])
    close = "" if keep_alive else "Connection: close\r\n"
    return (
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n{fields}"
        f"Date: {_http_date()}\r\nContent-Length: {len(response.body)}\r\n{close}\r\n"
    ).encode("latin-1")
