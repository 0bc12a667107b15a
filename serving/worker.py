"""gunicorn's gevent worker, serving plain requests with its own HTTP/1.1 loop
(:mod:`serving.http1`), made to stop promptly and to answer unparsable requests in JSON.

On SIGTERM the stock worker stops accepting and waits for every open connection, and an idle
keep-alive connection (which SageMaker's front end keeps open) only ends when its keep-alive
timeout does, so every stop took the whole graceful timeout. This worker closes idle
connections as soon as the stop begins: connections waiting for the first byte of their next
request. Requests in flight, or whose bytes have begun to arrive, finish, and their
connections close right after the response. Those still in flight when the graceful timeout
is about to end are cut, and the worker logs how many, at ERROR. A stop that comes while the
worker still loads its model ends the worker at once.

At its connection limit (``worker_connections``) the stock worker accepts nothing more, so
idle connections could keep every new one, ``/ping`` included, out until their keep-alive
ended. This worker then closes the connections idle the longest.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import json
import signal
import socket
import sys
import termios
import time
from functools import partial
from operator import attrgetter
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn import util as gunicorn_util
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import GeventWorker

from .http1 import HandOver, Http11Loop
from .logs import ACCESS_FLUSH_SECONDS, access_lines

STOP_POLL_SECONDS = 0.1

#: How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
SWITCH_INTERVAL_SECONDS = 0.0002

#: Requests still in flight this long before the graceful timeout ends are cut: the master
#: kills the worker when it ends, and the worker must say what it cut before that.
STOP_MARGIN_SECONDS = 0.5

#: At the connection limit, idle connections are closed down to this fraction of it below:
#: closing a batch spares a look at every connection at each accept past the limit.
ROOM_FRACTION = 0.05


class _TrackedSocket:
    """A client socket that notes when bytes of a request have been read from it, and gives
    back first the bytes :meth:`unread` put back."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reading_request = False
        self.closing = False
        self._unread = b""
        #: When the last request was answered (or the connection accepted).
        self.idle_since = time.monotonic()

    @property
    def reading_request(self) -> bool:
        """Bytes of a request have been read, and the request is not answered yet."""
        return self._reading_request

    @reading_request.setter
    def reading_request(self, reading: bool) -> None:
        if self._reading_request and not reading:
            self.idle_since = time.monotonic()
        self._reading_request = reading

    def unread(self, data: bytes) -> None:
        """Have the next reads return ``data`` before anything more from the socket."""
        self._unread = data + self._unread
        self._reading_request = self._reading_request or bool(data)

    def recv(self, size: int, *args: Any) -> bytes:
        if self._unread:
            data, self._unread = self._unread[:size], self._unread[size:]
            return data
        try:
            data = self._sock.recv(size, *args)
        except OSError:
            if self.closing:  # gevent cancels the wait with EBADF: the end, not an error
                return b""
            raise
        self._reading_request = self._reading_request or bool(data)
        return data

    def recv_into(self, buffer: Any, size: int = 0, *args: Any) -> int:
        if self._unread:
            size = min(size or len(buffer), len(self._unread))
            buffer[:size], self._unread = self._unread[:size], self._unread[size:]
            return size
        try:
            count: int = self._sock.recv_into(buffer, size, *args)
        except OSError:
            if self.closing:
                return 0
            raise
        self._reading_request = self._reading_request or count > 0
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
        if self._reading_request or self._unread:
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


class _GunicornPathApp:
    """The app as gunicorn's own handling calls it, where an app's ``Connection: close`` ends
    the connection as it does on the HTTP/1.1 loop (gunicorn drops the hop-by-hop headers an
    app sets, and would read what follows a body the app could not read as a next request).
    Anything else is the app's (``worker.wsgi.state`` and so on)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if ("Connection", "close") in headers:
                start_response.__self__.force_close()  # gunicorn's Response
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class ServingGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    #: gunicorn's: the WSGI app (load_wsgi sets it), and whether the worker keeps serving.
    wsgi: Any
    alive: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[_TrackedSocket] = set()
        self._loop: Http11Loop | None = None
        self._room = max(1, int(self.worker_connections * ROOM_FRACTION))

    def init_process(self) -> None:
        # gunicorn answers a request it cannot parse (bad request line, Content-Length,
        # header) with an HTML page written by gunicorn.util.write_error, and offers no hook:
        # in this worker process, that function writes our JSON instead.
        gunicorn_util.write_error = write_json_error
        # Python code in a pool thread (a user's hook, a codec on a large body) holds the GIL
        # for up to the switch interval at a time, and the event loop needs it several times
        # to answer one /ping (after each system call): two clients posting 6 MB RecordIO
        # bodies, /ping p99 21-28 ms at the default 5 ms, 13 ms at 1 ms, 7-10 ms at 1 ms with
        # the pool threads' lower priority, 5.7-6.9 ms at 0.2 ms with it (and 15% more bodies
        # answered). conv and MLP throughput did not move (benchmarks/run.py cells, A/B runs).
        # onnxruntime releases the GIL, so model runs are unaffected.
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # Until run() the worker loads its model (post_worker_init), maybe for minutes and in
        # native code, where gunicorn's handler would only note the stop for later: with no
        # request to finish, a stop ends the worker at once. run() installs the handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        if Http11Loop.serves(self.cfg):
            self._loop = Http11Loop(self)
        executor = getattr(self.wsgi, "executor", None)
        if executor is not None:
            executor.on_exhausted = self._replace
        self.wsgi = _GunicornPathApp(self.wsgi)

    def _replace(self) -> None:
        """Stop gracefully, as after ``max_requests``: the master starts a new worker."""
        if self.alive:
            self.log.error("this worker cannot serve any more: stopping it to be replaced")
            self.alive = False

    def run(self) -> None:
        """gunicorn's gevent worker's loop, but for the stop: gunicorn waits its graceful
        timeout in steps of a second, and the master's own, which began a moment earlier,
        ends first and kills the worker unheard."""
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn: requests are not disturbed
        servers = [self._start_server(listener) for listener in self.sockets]
        self._flush_access_log_when_idle()
        try:
            while self.alive:
                self.notify()
                gevent.sleep(STOP_POLL_SECONDS)
            self._stop(servers)
        finally:
            access_lines.on_pending = None
            access_lines.flush()

    def _start_server(self, listener: Any) -> StreamServer:
        listener.setblocking(1)
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        pool = Pool(self.worker_connections)
        server = StreamServer(
            listener, handle=partial(self.handle, listener), spawn=pool, **ssl_args
        )
        if self.cfg.workers > 1:
            server.max_accept = 1  # as gunicorn: leave the next connection to another worker
        server.start()
        return server

    def _stop(self, servers: list[StreamServer]) -> None:
        """Stop accepting; end idle connections at once and the others after their answer;
        cut those still in flight just before the graceful timeout ends."""
        deadline = time.monotonic() + self.cfg.graceful_timeout - STOP_MARGIN_SECONDS
        for server in servers:
            server.close()
        while True:
            # Each time: a connection accepted just before the close may have begun only now.
            for connection in [c for c in self._connections if not c.closing and c.idle()]:
                connection.close_idle()  # its keep-alive read ends at once
            if not self._connections or time.monotonic() >= deadline:
                break
            self.notify()
            gevent.sleep(STOP_POLL_SECONDS)
        cut = sum(not c.closing for c in self._connections)
        if cut:
            self.log.error("graceful stop cut %d request%s in flight", cut, "" if cut == 1 else "s")
        for server in servers:
            server.stop(timeout=STOP_POLL_SECONDS)  # kills what is left

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        tracked = _TrackedSocket(client)
        self._connections.add(tracked)
        if len(self._connections) >= self.worker_connections:
            self._make_room(tracked)
        try:
            if self._loop is not None:
                try:
                    self._loop.serve(tracked, addr, listener.getsockname())
                    return
                except HandOver as hand_over:
                    tracked.unread(hand_over.received)
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                        self.log.exception("Socket error processing request.")
                    return
                except Exception:  # e.g. a body that failed midway: the connection ends
                    self.log.exception("Error handling request")
                    return
            super().handle(listener, tracked, addr)
        finally:
            self._connections.discard(tracked)

    def _make_room(self, new: _TrackedSocket) -> None:
        """At the connection limit gevent accepts no more: close the connections idle the
        longest (never ``new``, which has had no time to send its request), down to a little
        below the limit."""
        open_ = [c for c in self._connections if not c.closing]
        excess = len(open_) - (self.worker_connections - self._room)
        idle = [c for c in open_ if c is not new and c.idle()]
        for connection in heapq.nsmallest(excess, idle, key=attrgetter("idle_since")):
            connection.close_idle()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        try:
            answered = super().handle_request(listener_name, req, sock, addr)
        finally:
            sock.reading_request = False  # answered: the next byte starts a new request
        if not self.alive:
            # The stop began while this request ran: gunicorn only says Connection: close to
            # requests that start after it, and would keep this connection for the next.
            raise StopIteration
        return answered

    def _flush_access_log_when_idle(self) -> None:
        """Write pending access lines out when the event loop has nothing else to do (an idle
        watcher), or :data:`ACCESS_FLUSH_SECONDS` after the first, whichever comes first:
        under load one write carries many lines; a quiet worker's lines come out at once,
        before whatever happens next (a stop, the master's next line)."""
        loop = gevent.get_hub().loop
        idle = loop.idle()
        timer = loop.timer(ACCESS_FLUSH_SECONDS)

        def flush() -> None:
            idle.stop()
            timer.stop()
            access_lines.flush()

        def pending() -> None:
            idle.start(flush)
            timer.start(flush)

        access_lines.on_pending = pending
