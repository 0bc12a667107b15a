"""Receiving a request body: within the payload limit, while it keeps arriving, and within
the memory a worker lets bodies take.

A body with a Content-Length is received straight from the socket (:class:`SocketBody`):
gunicorn's body stream copies it through several buffers and allocates a fresh megabyte for
each ``recv``, which cost 0.55 ms of CPU for a 0.6 MB body against 0.1 ms received directly,
half of a conv net's whole request. Chunked bodies go through gunicorn's stream.

A body is received in parts sized to what has arrived, each part's room taken from the
worker's :class:`~serving.admission.BodyMemory` before it is allocated: a client that declares
6 MB and sends one byte holds one part's worth. A body that makes no progress for
``BodyLimits.stall`` seconds is a 408.
"""

from __future__ import annotations

import fcntl
import io
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import IO, Any, Protocol

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.errors import ParseException
from gunicorn.http.unreader import SocketUnreader

from handlers.errors import InvalidInput, PayloadTooLarge, ServingError

from .admission import Holding

#: Most a :class:`SocketBody` allocates and reads at once, in bytes.
MAX_READ_BYTES = 16 << 20

#: Smallest part a body is received in, when less than that has arrived yet; also the most a
#: chunked body is read in at once through gunicorn's stream.
MIN_PART_BYTES = 64 << 10

#: Size of the reads that drop a body nobody read.
DRAIN_READ_BYTES = 64 << 10


class BodyTimeout(ServingError):
    """The body stopped arriving."""

    status = HTTPStatus.REQUEST_TIMEOUT


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class BodyLimits:
    """What a worker allows a body: at most ``size`` bytes (``None``: any; ``too_large`` is
    the 413's message), and at most ``stall`` seconds without a byte (``None``: no limit;
    ``stalled`` is the 408's message)."""

    size: int | None
    too_large: str = "request body is too large"
    stall: float | None = None
    stalled: str = "the request body stopped arriving"


class RequestBody:
    """One request's body, ``declared`` bytes long (``None``: chunked), read from ``stream``
    within ``limits``, holding what it reads in ``holding`` (if given): each read gives back
    what the previous one held (a multi-record body is read in chunks, each answered before
    the next), the request's end gives back the rest. ``sock`` is the connection's socket
    under ``stream`` (``gunicorn.socket`` in gunicorn's environ), for the stall limit.

    A Content-Length over the limit is refused at the first read; a chunked body is refused
    once it has passed the limit, which is how an oversize one shows itself; a body shorter
    than its Content-Length, or empty, is refused too. :attr:`failed` says that a read was
    refused or cut short: the rest of the body is then unknown, and the connection must end.
    """

    def __init__(
        self,
        stream: IO[bytes],
        declared: int | None,
        limits: BodyLimits,
        holding: Holding | None = None,
        sock: Any = None,
    ) -> None:
        self._declared = declared
        self._limits = limits
        socket_body = SocketBody.of(stream)
        reserve = None if holding is None else holding.take
        if socket_body is not None:
            socket_body.reserve = reserve
        self._source: Readable = socket_body or stream
        self._socket: Any = socket_body.socket if socket_body else sock
        self._holding = holding
        self._reserve = reserve
        self._total = 0
        self.failed = False

    def read(self, size: int) -> bytes:
        """Up to ``size`` more bytes (-1: all of it), ``b""`` at the end of the body."""
        if self._holding is not None:
            self._holding.release()
        try:
            return self._read(size)
        except BaseException:  # a refusal, a stall, or the request's own timeout meanwhile
            self.failed = True
            raise

    def whole(self) -> bytes:
        """The whole body; one byte past the limit is enough to refuse a chunked one."""
        return self.read(-1 if self._limits.size is None else self._limits.size + 1)

    def _read(self, size: int) -> bytes:
        declared, limit = self._declared, self._limits.size
        if declared is not None and limit is not None and declared > limit:
            raise PayloadTooLarge(self._limits.too_large)
        if declared is not None:
            size = declared - self._total if size < 0 else min(size, declared - self._total)
        data = self._receive(size) if size else b""
        self._total += len(data)
        if limit is not None and self._total > limit:
            raise PayloadTooLarge(self._limits.too_large)
        if declared is not None and len(data) < size:
            raise InvalidInput(f"request body ended after {self._total} of its {declared} bytes")
        if not self._total:
            raise InvalidInput("the request body is empty")
        return data

    def _receive(self, wanted: int) -> bytes:
        """Up to ``wanted`` bytes (all, for -1), however many reads the stream needs, each wait
        for the socket within ``limits.stall``: a socket timeout, which bounds every ``recv``
        on its own, so a body that keeps arriving is never cut."""
        source, sock, seconds = self._source, self._socket, self._limits.stall
        if isinstance(source, SocketBody) and source.received(wanted):
            return source.read(wanted)  # no wait for the socket: the usual small body
        if sock is None or seconds is None:
            return self._from_source(wanted)
        previous = sock.gettimeout()
        sock.settimeout(seconds)
        try:
            return self._from_source(wanted)
        except TimeoutError:
            raise BodyTimeout(self._limits.stalled) from None
        finally:
            sock.settimeout(previous)

    def _from_source(self, wanted: int) -> bytes:
        if isinstance(self._source, SocketBody):
            return self._source.read(wanted)
        return self._through_gunicorn(wanted)

    def _through_gunicorn(self, wanted: int) -> bytes:
        parts = []
        try:
            while wanted:
                size = MIN_PART_BYTES if wanted < 0 else min(wanted, MIN_PART_BYTES)
                if self._reserve is not None:
                    self._reserve(size)
                part = self._source.read(size)
                if not part:
                    break
                parts.append(part)
                wanted -= len(part) if wanted > 0 else 0
        except ParseException as exc:  # gunicorn's, for broken chunked framing
            raise InvalidInput(
                f"malformed chunked request body: {type(exc).__name__} {exc}"
            ) from exc
        return b"".join(parts)


def waiting_bytes(sock: Any) -> int:
    """Bytes received by the kernel and not read yet (FIONREAD; 0 if it cannot say)."""
    try:
        waiting = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):  # closed, or not a socket
        return 0
    return int.from_bytes(waiting, sys.byteorder)


class SocketBody:
    """A Content-Length body received with ``recv_into`` into one buffer per read: the bytes
    already received with the request's head come first, then the socket's.

    The worker's own HTTP/1.1 loop (:mod:`serving.http1`) builds one for each request it
    serves; :meth:`of` adapts gunicorn's body stream for the requests gunicorn serves.
    """

    def __init__(self, received: bytes, sock: Any, length: int) -> None:
        self._received = received[:length]
        self.socket = sock
        #: Body bytes not yet returned.
        self.left = length
        #: Waits until the given number of bytes more may be held (``None``: no limit).
        self.reserve: Callable[[int], None] | None = None

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

    def received(self, size: int) -> bool:
        """Whether a read of ``size`` bytes (-1: all that is left) needs nothing from the
        socket."""
        wanted = self.left if size < 0 else min(size, self.left)
        return len(self._received) >= min(wanted, MAX_READ_BYTES)

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (-1: all that is left) and at most :data:`MAX_READ_BYTES`;
        fewer only then, or if the peer stopped sending.

        Received in parts as large as what the kernel holds already (at least
        :data:`MIN_PART_BYTES`): not the whole Content-Length at once, which may lie.
        """
        size = min(self.left if size < 0 else size, self.left, MAX_READ_BYTES)
        head = self._received[:size]
        self._received = self._received[len(head) :]
        if head and self.reserve is not None:
            self.reserve(len(head))
        parts: list[bytes | memoryview] = []
        got = len(head)
        while got < size:
            part_size = min(size - got, max(MIN_PART_BYTES, waiting_bytes(self.socket)))
            if self.reserve is not None:
                self.reserve(part_size)
            part = self._receive_part(part_size)
            parts.append(part)
            got += len(part)
            if len(part) < part_size:
                break  # the peer stopped sending
        self.left -= got
        # a body received in one piece is handed on as it is: a lone bytes is not copied
        return b"".join([head, *parts]) if head else b"".join(parts)

    def _receive_part(self, size: int) -> bytes | memoryview:
        """``size`` bytes from the socket, fewer only if the peer stopped sending. One
        ``recv`` when the kernel holds them all (the usual case: its bytes are not zeroed
        first, as a bytearray's are); else gathered into one buffer, so that a body sent in
        tiny pieces is still held in few objects."""
        first: bytes = self.socket.recv(size)
        self._received_from_socket(len(first))
        if len(first) == size or not first:
            return first
        part = memoryview(bytearray(size))
        part[: len(first)] = first
        filled = len(first)
        while filled < size and (count := self.socket.recv_into(part[filled:])):
            filled += count
            self._received_from_socket(count)
        return part[:filled]

    def drain(self) -> bool:
        """Read and drop what is left of the body; ``False`` if the peer stopped sending first."""
        self.left -= len(self._received)
        self._received = b""
        scratch = memoryview(bytearray(min(self.left, DRAIN_READ_BYTES)))
        while self.left:
            count = self.socket.recv_into(scratch[: self.left])
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
