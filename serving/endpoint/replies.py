"""A container's answer to an exchange, and how an exchange ends: a :class:`Reply`, or
:class:`Unreachable` or :class:`TimedOut`, reported to a callback (:data:`Done`); and a chunked
body, decoded as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple


class Unreachable(Exception):
    """No answer could be had: refused, reset, closed, or a malformed answer."""


class TimedOut(Exception):
    """The container did not answer within the timeout."""


class Reply(NamedTuple):
    """A container's answer (a named tuple: immutable, and cheaper to make per request than a
    frozen dataclass)."""

    status: int
    #: Header names in lower case, values as sent (Latin-1).
    headers: dict[str, str]
    body: bytes | memoryview
    #: The pooled buffer ``body`` is a view of (:mod:`.buffers`): whoever writes ``body``
    #: last gives it back, once no transport holds a view of it.
    buffer: bytearray | None = None


#: An exchange's outcome: the answer, or :class:`Unreachable` or :class:`TimedOut`.
Outcome = Reply | Exception
Done = Callable[[Outcome], None]


def settle(future: asyncio.Future[Reply], outcome: Outcome) -> None:
    if future.done():  # cancelled
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class ChunkedBody:
    """A chunked body, decoded as it arrives: each call goes on from where the last stopped."""

    def __init__(self, start: int) -> None:
        self.position = start
        self.parts: list[bytes] = []

    def feed(self, buffer: bytearray, end: int) -> bytes | None:
        """The whole body once its last chunk and trailers are in ``buffer[:end]``, else
        ``None``."""
        while True:
            line_end = buffer.find(b"\r\n", self.position, end)
            if line_end < 0:
                return None
            size_text = bytes(buffer[self.position : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise Unreachable("the container's chunked answer is malformed") from None
            if size == 0:
                if buffer.find(b"\r\n\r\n", line_end, end) < 0:
                    return None
                return b"".join(self.parts)
            if end < line_end + 2 + size + 2:
                return None
            self.parts.append(bytes(buffer[line_end + 2 : line_end + 2 + size]))
            self.position = line_end + 2 + size + 2
