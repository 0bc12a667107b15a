"""Reading a request body within the payload limit, straight from the server's stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from gunicorn.http.errors import ParseException

from handlers.errors import InvalidInput, PayloadTooLarge

#: ``read(n)``: up to ``n`` more bytes of the body (-1: all of it).
BodyReader = Callable[[int], bytes]


def body_reader(
    stream: IO[bytes], declared: int | None, limit: int | None, too_large: str
) -> BodyReader:
    """A reader of the body in ``stream``, ``declared`` bytes long (``None``: chunked);
    ``too_large`` is the message of the 413 for a body over ``limit``.

    A Content-Length over ``limit`` is refused before reading; a chunked body is refused once
    it has passed the limit, which is how an oversize one shows itself; a body shorter than
    its Content-Length, or empty, is refused too.
    """
    if declared is not None and limit is not None and declared > limit:
        raise PayloadTooLarge(too_large)
    total = 0

    def read(size: int) -> bytes:
        nonlocal total
        if declared is not None:
            size = declared - total if size < 0 else min(size, declared - total)
        data = _read(stream, size) if size else b""
        total += len(data)
        if limit is not None and total > limit:
            raise PayloadTooLarge(too_large)
        if declared is not None and len(data) < size:
            raise InvalidInput(f"request body ended after {total} of its {declared} bytes")
        if not total:
            raise InvalidInput("the request body is empty")
        return data

    return read


def read_whole(reader: BodyReader, limit: int | None) -> bytes:
    """The whole body; one byte past ``limit`` is enough to refuse a chunked one."""
    return reader(-1 if limit is None else limit + 1)


def _read(stream: IO[bytes], wanted: int) -> bytes:
    """Up to ``wanted`` bytes (all, for -1), however many reads the stream needs."""
    try:
        if wanted < 0:
            return stream.read()
        chunks = []
        while wanted > 0 and (chunk := stream.read(wanted)):
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)
    except ParseException as exc:  # gunicorn's, for broken chunked framing
        raise InvalidInput(f"malformed chunked request body: {type(exc).__name__} {exc}") from exc
