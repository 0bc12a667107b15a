"""Reading a request body within the payload limit.

A body with a Content-Length is received straight into one buffer (:class:`SocketBody`):
gunicorn's body stream copies it through several buffers and allocates a fresh megabyte for
each ``recv``, which cost 0.55 ms of CPU for a 0.6 MB body against 0.1 ms received directly,
half of a conv net's whole request. Chunked bodies go through gunicorn's stream.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO, Any, Protocol

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.errors import ParseException
from gunicorn.http.unreader import SocketUnreader

from handlers.errors import InvalidInput, PayloadTooLarge

#: Most a :class:`SocketBody` allocates and reads at once, in bytes.
MAX_READ_BYTES = 16 << 20

#: Size of the reads that drop a body nobody read.
DRAIN_READ_BYTES = 64 << 10

#: ``read(n)``: up to ``n`` more bytes of the body (-1: all of it).
BodyReader = Callable[[int], bytes]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


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
    source: Readable = SocketBody.of(stream) or stream
    total = 0

    def read(size: int) -> bytes:
        nonlocal total
        if declared is not None:
            size = declared - total if size < 0 else min(size, declared - total)
        data = _read(source, size) if size else b""
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


def _read(stream: Readable, wanted: int) -> bytes:
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


class SocketBody:
    """A Content-Length body received with ``recv_into`` into one buffer per read: the bytes
    already received with the request's head come first, then the socket's.

    The worker's own HTTP/1.1 loop (:mod:`serving.http1`) builds one for each request it
    serves; :meth:`of` adapts gunicorn's body stream for the requests gunicorn serves.
    """

    def __init__(self, received: bytes, sock: Any, length: int) -> None:
        self._received = received[:length]
        self._socket = sock
        #: Body bytes not yet returned.
        self.left = length

    @classmethod
    def of(cls, stream: Any) -> SocketBody | None:
        """``stream`` itself if it is a socket body; one over gunicorn's stream if that is
        gunicorn's untouched Content-Length body; else ``None``."""
        if isinstance(stream, SocketBody):
            return stream
        if type(stream) is not Body or stream.buf.tell():
            return None
        reader = stream.reader
        if type(reader) is not LengthReader or not isinstance(reader.unreader, SocketUnreader):
            return None
        return _GunicornSocketBody(reader)

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (-1: all that is left) and at most :data:`MAX_READ_BYTES`;
        fewer only then, or if the peer stopped sending."""
        size = min(self.left if size < 0 else size, self.left, MAX_READ_BYTES)
        view = memoryview(bytearray(size))  # not the whole Content-Length at once: it may lie
        head = self._received[:size]
        self._received = self._received[len(head) :]
        view[: len(head)] = head
        got = len(head)
        while got < size and (count := self._socket.recv_into(view[got:])):
            got += count
            self._received_from_socket(count)
        self.left -= got
        return bytes(view[:got])

    def drain(self) -> bool:
        """Read and drop what is left of the body; ``False`` if the peer stopped sending first."""
        self.left -= len(self._received)
        self._received = b""
        scratch = memoryview(bytearray(min(self.left, DRAIN_READ_BYTES)))
        while self.left:
            count = self._socket.recv_into(scratch[: self.left])
            if not count:
                return False
            self._received_from_socket(count)
            self.left -= count
        return True

    def _received_from_socket(self, count: int) -> None:
        """Note ``count`` more body bytes taken from the socket."""


class _GunicornSocketBody(SocketBody):
    """gunicorn's Content-Length body, taken over from its stream (``Body``, ``LengthReader``,
    ``SocketUnreader``).

    Anything gunicorn received past the body (a pipelined next request) is handed back to it,
    and its count of the body bytes left is kept in step, so that it reads the next request
    where it starts. ``tests/test_body.py`` checks this against the installed gunicorn.
    """

    def __init__(self, reader: LengthReader) -> None:
        unreader = reader.unreader
        received = unreader.buf.getvalue()
        super().__init__(received, unreader.sock, reader.length)
        unreader.buf = io.BytesIO()
        if len(received) > reader.length:
            unreader.unread(received[reader.length :])
        self._reader = reader
        # gunicorn's count is of the body bytes still in the socket, so that a body left half
        # read is drained from the socket, and no further.
        reader.length -= len(self._received)

    def _received_from_socket(self, count: int) -> None:
        self._reader.length -= count
