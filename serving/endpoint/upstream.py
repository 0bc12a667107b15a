"""HTTP/1.1 to one container: a pool of keep-alive connections
(:class:`.upstream_connection.UpstreamConnection`), and the exchanges on them.

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

from .buffers import LARGE_BODY
from .replies import Done, Outcome, Reply, Unreachable
from .upstream_connection import UpstreamConnection

#: Idle connections kept per container.
MAX_IDLE = 64
#: Seconds to wait for a container to accept a connection.
CONNECT_TIMEOUT = 5.0


class Container:
    """One container's address, and its idle keep-alive connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._idle: list[UpstreamConnection] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, connection = await loop.create_connection(
                    UpstreamConnection, self.host, self.port
                )
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

    def _take_idle(self) -> UpstreamConnection | None:
        while self._idle:
            candidate = self._idle.pop()
            if not candidate.closed:
                return candidate
        return None

    def _answered(
        self,
        connection: UpstreamConnection,
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
        connection: UpstreamConnection | None,
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
        self, connection: UpstreamConnection | None, parts: list[bytes | memoryview], timeout: float
    ) -> Reply:
        if connection is not None:
            try:
                return await self._exchange(connection, parts, timeout)
            except Unreachable:
                if connection.answering:  # part of an answer came: not a stale connection
                    raise
        return await self._exchange(await self._connect(), parts, timeout)

    async def _exchange(
        self, connection: UpstreamConnection, parts: list[bytes | memoryview], timeout: float
    ) -> Reply:
        try:
            reply = await connection.send(parts, timeout)
        except BaseException:
            connection.close()
            raise
        self._release(connection, True)
        return reply

    def _release(self, connection: UpstreamConnection, answered: bool) -> None:
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
