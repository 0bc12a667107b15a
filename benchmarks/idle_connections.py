"""``/ping`` while thousands of idle connections are held open against a one-worker server
(more than its ``worker_connections``), by a client that opens them once or that reconnects
each one the server closes.

    .venv/bin/python benchmarks/idle_connections.py [--idle 3000] [--pings 500]

Prints, per way of holding them, the pings answered and their latency (a fresh connection per
ping, as a new client has: connect, request, status line).
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from tests.server import running_server  # noqa: E402

IRIS = HERE.parent / "examples" / "iris" / "model"
PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


def ping(port: int, timeout: float) -> float | None:
    """Seconds for one ``/ping`` on a fresh connection; ``None`` if it failed or was late."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(PING)
            if not conn.recv(64).startswith(b"HTTP/1.1 200"):
                return None
    except OSError:
        return None
    return time.perf_counter() - started


class IdleClient:
    """``count`` connections that never send a byte; with ``reconnect``, each one the server
    closes is opened again at once."""

    def __init__(self, port: int, count: int, reconnect: bool) -> None:
        self.port, self.reconnect = port, reconnect
        self.selector = selectors.DefaultSelector()
        self.reconnects = 0
        self.stopping = threading.Event()
        for _ in range(count):
            self._open()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _open(self) -> None:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.selector.register(conn, selectors.EVENT_READ)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                self.selector.unregister(conn)
                conn.close()  # the server closed it (there is nothing else to read)
                if self.reconnect and not self.stopping.is_set():
                    self._open()
                    self.reconnects += 1

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


def measure(port: int, idle: int, pings: int, reconnect: bool, timeout: float) -> str:
    client = IdleClient(port, idle, reconnect)
    try:
        time.sleep(1.0)  # the worker has accepted the backlog and made room
        times = [ping(port, timeout) for _ in range(pings)]
    finally:
        client.close()
    answered = sorted(t * 1000 for t in times if t is not None)
    mode = "reconnecting" if reconnect else "opened once"
    line = (
        f"{idle} idle connections ({mode}, {client.reconnects} reconnects): "
        f"{len(answered)}/{pings} pings answered within {timeout:.0f} s"
    )
    if len(answered) < 2:
        return line
    p50, p99 = (statistics.quantiles(answered, n=100)[i] for i in (49, 98))
    return f"{line}; p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {answered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=3000)
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds a ping may take")
    arguments = parser.parse_args()
    # One file descriptor per connection, here and in the server (which inherits the limit).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with running_server(["--model-dir", str(IRIS)], log) as server:
            for reconnect in (False, True):
                print(
                    measure(
                        server.port, arguments.idle, arguments.pings, reconnect, arguments.timeout
                    )
                )
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
    print(f"server log: {len(errors)} ERROR lines", *errors[:5], sep="\n")


if __name__ == "__main__":
    main()
