"""HTTP/1.1 to one container: keep-alive connections kept in a pool, each an asyncio protocol
that parses the answer's head (:mod:`serving.h1`: gunicorn_h1c's C parser when installed) and
collects its body (by Content-Length, chunked, or up to the close).

An exchange reports its outcome to a callback: a small request on an idle connection is
written at once and answered from the connection's own ``buffer_updated``, with no task and
no future in between (:meth:`Container.start`, what the API's requests take: two turns of the
event loop a request instead of five). :meth:`Container.request` awaits the same.

A connection taken from the pool may have been closed by the container meanwhile (its
keep-alive timeout, a restart); a request that fails on such a connection before any byte of
an answer arrived is sent once more on a new one, which is what HTTP clients do for a stale
keep-alive connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from .. import h1
from .buffers import MIN_POOLED, POOL
from .connection import LARGE_BODY, RECEIVE_BYTES, write_large

#: Idle connections kept per container.
MAX_IDLE = 64
#: Seconds to wait for a container to accept a connection.
CONNECT_TIMEOUT = 5.0
#: A head larger than this is a broken container.
MAX_HEAD_BYTES = 64 * 1024


class Unreachable(Exception):
    """No answer could be had: refused, reset, closed, or a malformed answer."""


class TimedOut(Exception):
    """The container did not answer within the timeout."""


@dataclass(frozen=True)
class Reply:
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


def _settle(future: asyncio.Future[Reply], outcome: Outcome) -> None:
    if future.done():  # cancelled
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class _Connection(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()  # once: each call is a getpid() on 3.11
        self.transport: asyncio.Transport | None = None
        # the answer's head (and a body that is not received on its own) so far
        self._buffer = bytearray(RECEIVE_BYTES)
        self._view = memoryview(self._buffer)
        self._end = 0
        #: Who gets the outcome of the exchange under way (``None`` between exchanges).
        self._done: Done | None = None
        self.closed = False
        self.keep_alive = True
        self._head: tuple[int, dict[str, str], int] | None = None
        self._chunks: _Chunks | None = None
        #: A Content-Length body that did not come with its head: its buffer, and how much
        #: of it has arrived.
        self._body: bytearray | None = None
        self._body_view: memoryview | None = None
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    @property
    def answering(self) -> bool:
        """Whether any byte of an answer has come."""
        return self._end > 0 or self._head is not None or self._body_view is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=LARGE_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # a write waiting for the buffer to drain sees the close
        if self._done is not None:
            if self._head is not None and self._until_close():
                self._finish(self._view[self._head[2] : self._end].tobytes())
            else:
                self._complete(Unreachable("the container closed the connection"))

    def begin(self, timeout: float, done: Done) -> None:
        """An exchange starts (its request is written next): ``done`` gets its outcome, once;
        :class:`TimedOut` past ``timeout``."""
        self._done = done
        self._end = 0
        self._head = None
        self._chunks = None
        self._timer = self._loop.call_later(timeout, self._timed_out)

    async def send(self, parts: list[bytes | memoryview], timeout: float) -> Reply:
        """Send a request and wait for its answer (a large body written as the socket takes
        it); :class:`TimedOut` past ``timeout``."""
        assert self.transport is not None
        future: asyncio.Future[Reply] = self._loop.create_future()
        self.begin(timeout, lambda outcome: _settle(future, outcome))
        if self.closed:
            self._complete(Unreachable("the container closed the connection"))
        elif sum(map(len, parts)) > LARGE_BODY:
            for part in parts:
                await write_large(self.transport, self.writable, part)
        else:
            self.transport.write(b"".join(parts))
        return await future

    def _complete(self, outcome: Outcome) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        done(outcome)  # last: it may start the next exchange on this connection

    def _timed_out(self) -> None:
        self._timer = None
        self.close()  # and a write waiting for the container to read ends
        self._complete(TimedOut())

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        """Close the connection; at once, bytes unsent dropped, if some are left (so that no
        transport keeps a view of a body: see :mod:`.buffers`)."""
        self.closed = True
        if self.transport is not None:
            if self.transport.get_write_buffer_size():
                self.transport.abort()
            else:
                self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body_view is not None:  # exactly the rest of the body
            return self._body_view[self._received :]
        if self._end == len(self._buffer):  # a long head, or a chunked answer: more room
            self._buffer = bytearray(2 * len(self._buffer))
            self._buffer[: self._end] = self._view
            self._view = memoryview(self._buffer)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._body_view is not None:
            self._received += nbytes
            if self._received == len(self._body_view):
                view, buffer = self._body_view, self._body
                self._body = self._body_view = None
                self._finish(view, buffer if len(view) >= MIN_POOLED else None)
            return
        self._end += nbytes
        if self._done is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            self._parse()
        except Unreachable as exc:
            self.close()
            self._complete(exc)

    def _parse(self) -> None:
        if self._head is None:
            try:
                head = h1.parse_response(self._view[: self._end])
            except h1.IncompleteError:
                if self._end > MAX_HEAD_BYTES:
                    raise Unreachable("the container's answer has no end of head") from None
                return
            except h1.ParseError as exc:
                raise Unreachable(f"the container's answer is malformed: {exc}") from None
            status, consumed = head["status"], head["consumed"]
            if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
                rest = self._view[consumed : self._end].tobytes()
                self._buffer[: len(rest)] = rest
                self._end = len(rest)
                self._parse()
                return
            headers: dict[str, str] = {}
            for name, value in head["headers"]:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            connection = headers.get("connection", "").lower()
            self.keep_alive = head["minor_version"] == 1 and "close" not in connection
            self._head = (status, headers, consumed)
        status, headers, start = self._head
        if status in (204, 304):
            self._finish(b"")
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            if self._chunks is None:
                self._chunks = _Chunks(start)
            body = self._chunks.feed(self._buffer, self._end)
            if body is not None:
                self._finish(body)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise Unreachable("the container's Content-Length is not a number") from None
            available = self._end - start
            if available >= length:
                if available > length:
                    self.keep_alive = False  # bytes after the answer: nobody asked for them
                self._finish(self._view[start : start + length].tobytes())
                return
            # the rest of the body goes straight into a buffer of its own
            buffer = POOL.take(length) if length >= MIN_POOLED else bytearray(length)
            buffer[:available] = self._view[start : self._end]
            self._body, self._body_view = buffer, memoryview(buffer)[:length]
            self._received = available
        # else: the body ends when the connection closes (connection_lost)

    def _until_close(self) -> bool:
        assert self._head is not None
        headers = self._head[1]
        return "content-length" not in headers and "transfer-encoding" not in headers

    def _finish(self, body: bytes | memoryview, buffer: bytearray | None = None) -> None:
        """The answer is whole: nothing of this exchange's state is touched after this (the
        outcome's callback may start the next exchange on this connection)."""
        assert self._head is not None
        status, headers, _ = self._head
        if self._until_close():
            self.keep_alive = False
        self._complete(Reply(status, headers, body, buffer))


class _Chunks:
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


class Container:
    """One container's address, and its idle keep-alive connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[_Connection] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise Unreachable(f"cannot connect to {self.url}: {exc}") from None
        return connection

    def start(self, parts: list[bytes | memoryview], timeout: float, done: Done) -> None:
        """Send a request (its head and body as ``parts``); ``done`` gets the answer, or
        :class:`Unreachable` or :class:`TimedOut`, once. A small request on an idle
        connection is written now; anything else (a connection to make, a large body to
        write as the socket takes it, a stale connection to replace) goes on in a task.
        When ``done`` is called, no transport holds a view of ``parts`` any more."""
        connection = self._take_idle()
        if connection is None or sum(map(len, parts)) > LARGE_BODY:
            self._in_task(connection, parts, timeout, done)
            return
        connection.begin(
            timeout, lambda outcome: self._answered(connection, parts, timeout, outcome, done)
        )
        assert connection.transport is not None
        connection.transport.write(b"".join(parts))

    async def request(self, parts: list[bytes | memoryview], timeout: float) -> Reply:
        """:meth:`start`, awaited."""
        return await self._send(self._take_idle(), parts, timeout)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                return candidate
        return None

    def _answered(
        self,
        connection: _Connection,
        parts: list[bytes | memoryview],
        timeout: float,
        outcome: Outcome,
        done: Done,
    ) -> None:
        if isinstance(outcome, Unreachable) and not connection.answering:
            connection.close()  # stale: the container had closed it; once more on a new one
            self._in_task(None, parts, timeout, done)
            return
        self._release(connection, not isinstance(outcome, Exception))
        done(outcome)

    def _in_task(
        self,
        connection: _Connection | None,
        parts: list[bytes | memoryview],
        timeout: float,
        done: Done,
    ) -> None:
        def finished(task: asyncio.Task[Reply]) -> None:
            if task.cancelled():  # the command is stopping
                return
            exc = task.exception()
            if exc is None:
                done(task.result())
            elif isinstance(exc, Exception):
                done(exc)
            else:
                raise exc

        task = asyncio.get_running_loop().create_task(self._send(connection, parts, timeout))
        task.add_done_callback(finished)

    async def _send(
        self, connection: _Connection | None, parts: list[bytes | memoryview], timeout: float
    ) -> Reply:
        if connection is not None:
            try:
                return await self._exchange(connection, parts, timeout)
            except Unreachable:
                if connection.answering:  # part of an answer came: not a stale connection
                    raise
        return await self._exchange(await self._connect(), parts, timeout)

    async def _exchange(
        self, connection: _Connection, parts: list[bytes | memoryview], timeout: float
    ) -> Reply:
        try:
            reply = await connection.send(parts, timeout)
        except BaseException:
            connection.close()
            raise
        self._release(connection, True)
        return reply

    def _release(self, connection: _Connection, answered: bool) -> None:
        """Back to the pool after an exchange, or closed (bytes left unsent dropped)."""
        transport = connection.transport
        if (
            answered
            and connection.keep_alive
            and not connection.closed
            and transport is not None
            and not transport.get_write_buffer_size()  # else it answered before reading all
            and len(self._idle) < MAX_IDLE
        ):
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
