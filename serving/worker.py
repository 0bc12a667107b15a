"""gunicorn's gevent worker, made to stop promptly.

On SIGTERM the stock worker stops accepting and waits for every open connection, and an idle
keep-alive connection (which SageMaker's front end keeps open) only ends when its keep-alive
timeout does, so every stop took the whole graceful timeout. This worker closes idle
connections as soon as the stop begins; requests in flight finish and their connections close
after the response (gunicorn answers them with ``Connection: close``).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventWorker

STOP_POLL_SECONDS = 0.1


class ServingGeventWorker(GeventWorker):  # type: ignore[misc]  # gunicorn is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()

    def run(self) -> None:
        gevent.spawn(self._close_idle_connections_on_stop)
        super().run()

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        self._connections.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.discard(client)

    def handle_request(self, listener_name: Any, req: Any, sock: socket.socket, addr: Any) -> Any:
        self._busy.add(sock)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._busy.discard(sock)

    def _close_idle_connections_on_stop(self) -> None:
        while self.alive:
            gevent.sleep(STOP_POLL_SECONDS)
        for client in self._connections - self._busy:
            with contextlib.suppress(OSError):  # OSError: the peer closed it already
                client.shutdown(socket.SHUT_RDWR)  # its keep-alive read ends at once
