"""gunicorn's gevent worker, made to stop promptly, to answer unparsable requests in JSON and
to send a response's head and body in one write.

On SIGTERM the stock worker stops accepting and waits for every open connection, and an idle
keep-alive connection (which SageMaker's front end keeps open) only ends when its keep-alive
timeout does, so every stop took the whole graceful timeout. This worker closes idle
connections as soon as the stop begins: connections waiting for the first byte of their next
request. Requests in flight, or whose bytes have begun to arrive, finish, and their
connections close right after the response.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import sys
import termios
from typing import Any

import gevent
from gunicorn import util as gunicorn_util
from gunicorn.workers.ggevent import GeventWorker

from .logs import ACCESS_FLUSH_SECONDS, access_lines

STOP_POLL_SECONDS = 0.1

#: Largest body write a held response head is joined to; larger ones are sent after it on
#: their own, rather than copied to join them.
HEAD_WITH_BODY_BYTES = 64 * 1024


class _TrackedSocket:
    """A client socket that notes when bytes of a request have been read from it, and sends a
    response's head together with its first body bytes.

    gunicorn writes a response's head and its body in two ``sendall`` calls; through gevent,
    each costs a ``getsockopt`` and a ``send`` system call, and the client gets two segments.
    The head is held until the body's first write and sent with it, or on its own before any
    other write and when its request ends (``handle_request``): about 10% less CPU per request
    for a small model.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reading_request = False
        self.closing = False
        self._head = b""

    def sendall(self, data: bytes) -> None:
        if not self._head and data.startswith(b"HTTP/") and data.endswith(b"\r\n\r\n"):
            self._head = data  # a response head: the body follows
            return
        if self._head and len(data) <= HEAD_WITH_BODY_BYTES:
            data, self._head = self._head + data, b""
        self.flush()
        self._sock.sendall(data)

    def flush(self) -> None:
        """Send a held response head."""
        if self._head:
            head, self._head = self._head, b""
            self._sock.sendall(head)

    def send(self, *args: Any) -> int:
        self.flush()
        return self._sock.send(*args)

    def sendfile(self, *args: Any, **kwargs: Any) -> int:
        self.flush()
        return self._sock.sendfile(*args, **kwargs)

    def recv(self, *args: Any) -> bytes:
        try:
            data: bytes = self._sock.recv(*args)
        except OSError:
            if self.closing:  # gevent cancels the wait with EBADF: the end, not an error
                return b""
            raise
        self.reading_request = self.reading_request or bool(data)
        return data

    def recv_into(self, *args: Any) -> int:
        try:
            count: int = self._sock.recv_into(*args)
        except OSError:
            if self.closing:
                return 0
            raise
        self.reading_request = self.reading_request or count > 0
        return count

    def close_idle(self) -> None:
        """End the wait for a next request: its read returns nothing, as at a peer's close."""
        self.closing = True
        with contextlib.suppress(OSError):  # OSError: the peer closed it already
            self._sock.shutdown(socket.SHUT_RDWR)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def idle(self) -> bool:
        """No request begun: nothing read since the last response, nothing waiting unread."""
        if self.reading_request:
            return False
        # FIONREAD counts the bytes waiting without reading them; a peek through gevent's
        # socket would wait for data instead of answering.
        try:
            waiting = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return True  # the peer is gone
        return int.from_bytes(waiting, sys.byteorder) == 0


def write_json_error(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's answer to a request it cannot parse, as JSON like every other error."""
    text = f"{status} {reason}: {message}" if message else f"{status} {reason}"
    body = json.dumps({"error": text}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class ServingGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[_TrackedSocket] = set()

    def init_process(self) -> None:
        # gunicorn answers a request it cannot parse (bad request line, Content-Length,
        # header) with an HTML page written by gunicorn.util.write_error, and offers no hook:
        # in this worker process, that function writes our JSON instead.
        gunicorn_util.write_error = write_json_error
        super().init_process()

    def run(self) -> None:
        gevent.spawn(self._close_idle_connections_on_stop)
        gevent.spawn(self._write_access_log)
        try:
            super().run()
        finally:
            access_lines.flush()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        tracked = _TrackedSocket(client)
        self._connections.add(tracked)
        try:
            super().handle(listener, tracked, addr)
        finally:
            self._connections.discard(tracked)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        try:
            answered = super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.reading_request = False  # answered: the next byte starts a new request
            with contextlib.suppress(OSError):  # a head with no body (HEAD), or the peer gone
                sock.flush()
        if not self.alive:
            # The stop began while this request ran: gunicorn only says Connection: close to
            # requests that start after it, and would keep this connection for the next.
            raise StopIteration
        return answered

    def _write_access_log(self) -> None:
        while True:
            gevent.sleep(ACCESS_FLUSH_SECONDS)
            access_lines.flush()

    def _close_idle_connections_on_stop(self) -> None:
        while self.alive:
            gevent.sleep(STOP_POLL_SECONDS)
        for connection in [c for c in self._connections if c.idle()]:
            connection.close_idle()  # its keep-alive read ends at once
