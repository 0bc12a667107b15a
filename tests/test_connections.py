"""A worker at its connection limit closes the connections idle the longest, so that idle
connections (which clients, or an attacker, may hold open by the thousand) never keep a new
connection and ``/ping`` out."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from tests.server import ServerProcess, running_server

LIMIT = 50
IRIS = Path(__file__).parent.parent / "examples" / "iris" / "model"
BODY = b"[[1, 2, 3, 4]]"
REQUEST = (
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(IRIS), "--worker-connections", str(LIMIT)]
    with running_server(arguments, tmp_path / "server.log") as server:
        yield server


def connect(server: ServerProcess, stack: ExitStack) -> socket.socket:
    conn = stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
    conn.settimeout(5)
    return conn


def closed_by_server(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except ConnectionResetError:
        return True
    finally:
        conn.settimeout(5)


def ping_time(server: ServerProcess) -> float:
    started = time.monotonic()
    assert requests.get(server.url("/ping"), timeout=3).status_code == 200
    return time.monotonic() - started


def test_idle_connections_past_the_limit_do_not_keep_ping_out(server: ServerProcess) -> None:
    with ExitStack() as stack:
        idle = [connect(server, stack) for _ in range(LIMIT * 2 + 20)]
        for _ in range(5):
            assert ping_time(server) < 1.0
        response = requests.post(
            server.url("/invocations"),
            data=BODY,
            headers={"Content-Type": "application/json"},
            timeout=3,
        )
        assert response.status_code == 200
        assert closed_by_server(idle[0])  # the oldest made room
        assert not closed_by_server(idle[-1])  # the newest stay
    assert "ERROR" not in server.log()  # closing them is not a socket error


def test_the_connections_idle_longest_are_closed_first(server: ServerProcess) -> None:
    with ExitStack() as stack:
        used = connect(server, stack)  # the oldest connection, but the last one served
        first = [connect(server, stack) for _ in range(LIMIT // 2)]
        ping_time(server)  # accepted after them: the worker has them all now
        used.sendall(REQUEST)
        assert used.recv(65536).startswith(b"HTTP/1.1 200")
        later = [connect(server, stack) for _ in range(LIMIT // 2)]  # now past the limit
        assert ping_time(server) < 1.0
        closed = [closed_by_server(conn) for conn in first]
        assert closed[0]
        assert closed == sorted(closed, reverse=True)  # the oldest ones, in order
        assert not closed_by_server(used)
        assert not any(closed_by_server(conn) for conn in later)
        used.sendall(REQUEST)  # its keep-alive still serves
        assert used.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_request_begun_is_never_closed_to_make_room(server: ServerProcess) -> None:
    with ExitStack() as stack:
        begun = connect(server, stack)  # the oldest, its request half sent
        begun.sendall(REQUEST[:40])  # read by the worker or waiting: either way, begun
        for _ in range(LIMIT * 2):
            connect(server, stack)
        assert ping_time(server) < 1.0
        begun.sendall(REQUEST[40:])
        assert begun.recv(65536).startswith(b"HTTP/1.1 200")
