"""Row 5 of issue 15's table: idle keep-alive connections, up to and past the worker's
connection cap."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

from .outcome import Outcome
from .raw_http import request_bytes
from .servers import Work, default, raise_file_limit, serve
from .watching import check_ping, watching


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each asked ``/ping`` once and then stay open, idle."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                break  # the backlog is full
            opened.append(sock)
            sock.sendall(request_bytes("GET", "/ping"))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while sock.recv(1 << 16):
            pass
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def idle_case(outcome: Outcome, quick: bool, work: Work, count: int, p99_ms: float) -> None:
    cap = int(default("worker_connections", 1000))
    environ: dict[str, str] = {}
    if quick and count <= cap:  # a small cap, to reach it quickly
        cap, count, environ = 100, 150, {"SERVING_WORKER_CONNECTIONS": "100"}
    limit = raise_file_limit(count + 500)
    seconds = 2.0 if quick else 10.0
    with (
        serve(work, outcome.name, work.linear, environ=environ) as server,
        idle_connections(server.port, min(count, limit - 200)) as idle,
    ):
        time.sleep(0.5)  # answered and idle
        with watching(server, outcome, fresh=True):
            time.sleep(seconds)
        closed = sum(closed_by_server(sock) for sock in idle)
    outcome.attack = (
        f"{len(idle):,} idle keep-alive connections (worker connection cap {cap:,}); "
        f"`/ping` and `/invocations` on new connections for {seconds:g} s"
    )
    outcome.attacker = f"{len(idle):,} opened, {closed:,} closed by the server"
    check_ping(outcome, p99_ms, quick)
    others = outcome.others
    outcome.check(
        "new connections' `/invocations` are answered",
        others is not None and others.count > 0 and not others.failed,
        others,
    )


def idle_at_cap(outcome: Outcome, quick: bool, work: Work) -> None:
    cap = int(default("worker_connections", 1000))
    idle_case(outcome, quick, work, max(1000, cap + 50), p99_ms=100)


def idle_3000(outcome: Outcome, quick: bool, work: Work) -> None:
    idle_case(outcome, quick, work, 3000, p99_ms=100)
