"""What a request through ``serving endpoint`` costs in CPU over calling the container directly.

    .venv/bin/python benchmarks/endpoint.py                    # prints the table
    .venv/bin/python benchmarks/endpoint.py --requests 500     # a quick look
    .venv/bin/python benchmarks/endpoint.py --clients 1 --pause-ms 1   # clients that pause

One container (``serving serve``, one worker, the iris model) and, in front of it,
``serving endpoint --container-url``; the same requests are sent to the container's
``/invocations`` and to the API's ``/endpoints/bench/invocations``, over keep-alive
connections from client threads in this process (``--pause-ms``: each client waits that long
after each answer, as a real client does, instead of sending the next request at once). The
CPU time (user + system, from ``/proc/PID/stat``) of the container's processes and of the API
process is read before and after each phase: the overhead is (container + API CPU through the
API - container CPU direct) / requests. Rounds alternate the phases; the table gives the
median.

``--in-process`` measures instead the API's own Python work per small request, in this
process: a request's bytes handed to the API's connection, the container's answer (as
``serving serve`` sends it) handed to the container connection it was written to, with no
socket, no event-loop turn and no other process in between, so that changes to the request
path can be compared without the noise of the machine (median of ``--rounds``, in µs of CPU).

``--joined`` sends each request's head and body in one ``send``, as botocore does (the
default, http.client's way, sends the body with a second one, which takes the API and the
container a second wakeup for the body of most requests).

``--stacks`` also measures minimal forwarding proxies that do nothing but forward (no
validation, no variants): the other candidates for the API's HTTP stack (the standard
library's ``ThreadingHTTPServer`` with ``http.client``, and gevent's ``pywsgi`` with a pooled
``http.client`` on gevent's sockets), and the floors, which forward with no HTTP at all (an
asyncio byte pipe, and ``socat`` when it is installed). ``--stacks NAME ...`` picks some.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from shutil import which
from typing import Any

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.server import children, clean_environ, free_port  # noqa: E402

IRIS = ROOT / "examples" / "iris" / "model"
TICK = os.sysconf("SC_CLK_TCK")
ENDPOINT = "bench"


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes, and of the children they have waited for."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that just ended: its parent has its time
            continue
        total += sum(map(int, fields[11:15]))  # utime, stime, cutime, cstime
    return total / TICK


def tree(pid: int) -> list[int]:
    return [pid, *(grandchild for child in children(pid) for grandchild in tree(child))]


def wait_for(port: int, path: str, method: str = "GET", body: bytes = b"") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request(method, path, body, {"Content-Type": "text/csv"})
            if connection.getresponse().status == 200:
                connection.close()
                return
            connection.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"127.0.0.1:{port}{path} not ready")


class JoinedConnection(http.client.HTTPConnection):
    """Sends a request's head and body in one ``send``, as botocore's connection does for a
    body in bytes (http.client sends the body with a second one)."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes):
            self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
            head = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
            del self._buffer[:]  # type: ignore[attr-defined]
            self.send(head + message_body)
        else:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


def drive(
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    count: int,
    clients: int,
    pause: float = 0.0,
    joined: bool = False,
) -> None:
    """``count`` requests, from ``clients`` threads each with a keep-alive connection, each
    waiting ``pause`` seconds after each answer; ``joined``: each request in one ``send``."""
    errors: list[str] = []
    kind = JoinedConnection if joined else http.client.HTTPConnection

    def client(share: int) -> None:
        connection = kind("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        for _ in range(share):
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
            if pause:
                time.sleep(pause)
        connection.close()

    threads = [threading.Thread(target=client, args=(count // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} errors, e.g. {errors[0]}")


# --- the API's own Python work, in this process ---------------------------------------------

IN_PROCESS_REQUEST = (
    b"POST /endpoints/bench/invocations HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n"
    b"Accept-Encoding: identity\r\nContent-Length: 16\r\nContent-Type: text/csv\r\n"
    b"Accept: application/json\r\n\r\n5.1,3.5,1.4,0.2\n"
)
IN_PROCESS_ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Thu, 03 Dec 2026 13:10:16 GMT\r\n"
    b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n"
    b'{"outputs":{"probabilities":[[0.9816569,0.018343018,1.4394988e-8]],"label":[0]}}'
)


class _Transport(asyncio.Transport):
    """Takes what is written, and drops it."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    buffer = memoryview(protocol.get_buffer(len(data)))
    buffer[: len(data)] = data
    protocol.buffer_updated(len(data))


async def in_process(count: int, rounds: int) -> list[float]:
    """µs of CPU a small request takes in the API's own code, for each round."""
    from serving.endpoint.config import VariantConfig
    from serving.endpoint.connection import Connections
    from serving.endpoint.containers import Variant
    from serving.endpoint.service import Service
    from serving.endpoint.settings import EndpointSettings
    from serving.endpoint.upstream import Container
    from serving.endpoint.upstream_connection import UpstreamConnection

    settings = EndpointSettings()
    variant = Variant(ENDPOINT, VariantConfig("AllTraffic", None, "http://127.0.0.1:1"), 10.0)
    variant.container = container = Container("127.0.0.1", 1)
    service = Service(settings, {ENDPOINT: [variant]})
    api = Connections(service.start, settings.max_payload_bytes).protocol()
    api.connection_made(_Transport())
    upstream = UpstreamConnection()
    upstream.connection_made(_Transport())
    container._idle.append(upstream)  # idle, and back in the pool after each answer
    results = []
    for _ in range(rounds + 1):  # the first warms up
        start = time.process_time()
        for number in range(count):
            _feed(api, IN_PROCESS_REQUEST)
            _feed(upstream, IN_PROCESS_ANSWER)
            if number % 100 == 99:  # a turn of the loop now and then, as the timers expect
                await asyncio.sleep(0)
        results.append((time.process_time() - start) / count * 1e6)
        assert not api.busy
        assert container._idle == [upstream]
    return results[1:]


# --- the other candidate stacks and the floors, as minimal forwarding proxies --------------

STDLIB_PROXY = r"""
import http.client, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, upstream = int(sys.argv[1]), int(sys.argv[2])
local = threading.local()
class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not hasattr(local, "c"):
            local.c = http.client.HTTPConnection("127.0.0.1", upstream)
        headers = {k: self.headers[k] for k in ("Content-Type", "Accept") if k in self.headers}
        local.c.request("POST", "/invocations", body, headers)
        answer = local.c.getresponse(); data = answer.read()
        self.send_response(200 if answer.status < 300 else 424)
        self.send_header("Content-Type", answer.getheader("Content-Type", ""))
        self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
        self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
"""

GEVENT_PROXY = r"""
from gevent import monkey; monkey.patch_all()
import http.client, sys, queue
from gevent.pywsgi import WSGIServer
port, upstream = int(sys.argv[1]), int(sys.argv[2])
pool = queue.LifoQueue()
def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    try: c = pool.get_nowait()
    except queue.Empty: c = http.client.HTTPConnection("127.0.0.1", upstream)
    headers = {"Content-Type": environ.get("CONTENT_TYPE", ""),
               "Accept": environ.get("HTTP_ACCEPT", "*/*")}
    c.request("POST", "/invocations", body, headers)
    answer = c.getresponse(); data = answer.read(); pool.put(c)
    start_response("200 OK" if answer.status < 300 else "424 Failed Dependency", [
        ("Content-Type", answer.getheader("Content-Type", "")),
        ("x-Amzn-Invoked-Production-Variant", "AllTraffic"), ("Content-Length", str(len(data)))])
    return [data]
WSGIServer(("127.0.0.1", port), app, log=None).serve_forever()
"""


# The floors: what forwarding costs with no HTTP at all, each client connection piped byte for
# byte to a connection of its own to the container, in asyncio and in C (socat, a process per
# connection).
ASYNCIO_PIPE = r"""
import asyncio, sys
port, upstream = int(sys.argv[1]), int(sys.argv[2])
class Pipe(asyncio.Protocol):
    def __init__(self, peer=None): self.peer = peer
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.peer.transport.write(data)
    def connection_lost(self, exc):
        if self.peer is not None: self.peer.transport.close()
class Client(Pipe):
    def connection_made(self, transport):
        super().connection_made(transport); transport.pause_reading()
        asyncio.ensure_future(self.connect())
    async def connect(self):
        loop = asyncio.get_running_loop()
        _, self.peer = await loop.create_connection(lambda: Pipe(self), "127.0.0.1", upstream)
        self.transport.resume_reading()
async def main():
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    await server.serve_forever()
asyncio.run(main())
"""

STACKS = ["stdlib", "gevent pywsgi", "asyncio byte pipe"] + (["socat"] if which("socat") else [])


def start_proxy(stack: str, upstream: int) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    path = "/invocations"
    if stack == "serving endpoint":
        command = [sys.executable, "-m", "serving", "endpoint", ENDPOINT, "--port", str(port)]
        command += ["--container-url", f"http://127.0.0.1:{upstream}", "--log-level", "WARNING"]
        path = f"/endpoints/{ENDPOINT}/invocations"
    elif stack == "socat":
        listen = f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"
        command = ["socat", listen, f"TCP:127.0.0.1:{upstream},nodelay"]
    else:
        code = {"stdlib": STDLIB_PROXY, "gevent pywsgi": GEVENT_PROXY}.get(stack, ASYNCIO_PIPE)
        command = [sys.executable, "-c", code, str(port), str(upstream)]
    process = subprocess.Popen(command, env=clean_environ())
    wait_for(port, path, "POST", b"1,2,3,4\n")
    return process, port, path


def phase(
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    count: int,
    clients: int,
    pause: float,
    joined: bool,
) -> Callable[[], None]:
    return lambda: drive(port, path, body, content_type, count, clients, pause, joined)


def measure(
    direct: Callable[[], None], proxied: Callable[[], None], container: int, proxy: int, rounds: int
) -> dict[str, float]:
    """CPU seconds per phase, median over ``rounds``: the container direct, the container
    and the proxy through the proxy."""
    direct_cpu, through_container, through_proxy = [], [], []
    for _ in range(rounds):
        before = cpu_seconds(tree(container))
        direct()
        direct_cpu.append(cpu_seconds(tree(container)) - before)
        before_container, before_proxy = cpu_seconds(tree(container)), cpu_seconds(tree(proxy))
        proxied()
        time.sleep(0.2)  # socat's process for the connection ends, and is waited for
        through_container.append(cpu_seconds(tree(container)) - before_container)
        through_proxy.append(cpu_seconds(tree(proxy)) - before_proxy)
    return {
        "direct": statistics.median(direct_cpu),
        "container": statistics.median(through_container),
        "proxy": statistics.median(through_proxy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="small requests a phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--stacks",
        nargs="*",
        choices=STACKS,
        help="also these stacks (all of them when none is named)",
    )
    parser.add_argument(
        "--joined",
        action="store_true",
        help="each request's head and body in one send, as botocore sends them",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="the API's own Python work, in this process"
    )
    parser.add_argument(
        "--pause-ms", type=float, default=0.0, help="each client's pause after each answer"
    )
    arguments = parser.parse_args()
    if arguments.in_process:
        results = asyncio.run(in_process(arguments.requests, arguments.rounds))
        rounds = " ".join(f"{result:.1f}" for result in results)
        print(f"{statistics.median(results):.1f} µs of CPU a request (rounds: {rounds})")
        return

    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).random((65536, 4), dtype=np.float32))
    payloads = [
        ("CSV, 1 row (16 B)", b"5.1,3.5,1.4,0.2\n", "text/csv", arguments.requests),
        (
            ".npy, 65,536 rows (1 MiB)",
            buffer.getvalue(),
            "application/x-npy",
            arguments.requests // 40,
        ),
    ]
    port = free_port()
    command = [sys.executable, "-m", "serving", "serve", "--model-dir", str(IRIS), "--host"]
    command += ["127.0.0.1", "--port", str(port), "--workers", "1", "--inference-threads", "1"]
    container = subprocess.Popen(command, env=clean_environ(), stderr=subprocess.DEVNULL)
    others = arguments.stacks or (STACKS if arguments.stacks is not None else [])
    stacks = ["serving endpoint", *others]
    rows = []
    try:
        wait_for(port, "/ping")
        for stack in stacks:
            proxy, proxy_port, path = start_proxy(stack, port)
            try:
                for name, body, content_type, count in payloads:
                    for clients in arguments.clients:
                        pause = arguments.pause_ms / 1000
                        load = (body, content_type, count, clients)
                        paused = f", {arguments.pause_ms:g} ms pauses" if pause else ""
                        paused += ", joined" if arguments.joined else ""
                        cpu = measure(
                            phase(port, "/invocations", *load, pause, arguments.joined),
                            phase(proxy_port, path, *load, pause, arguments.joined),
                            container.pid,
                            proxy.pid,
                            arguments.rounds,
                        )
                        per = {key: value / count * 1000 for key, value in cpu.items()}
                        overhead = per["container"] + per["proxy"] - per["direct"]
                        rows.append(
                            f"| {stack} | {name} | {clients}{paused} | {per['direct']:.3f} | "
                            f"{per['container']:.3f} + {per['proxy']:.3f} | **{overhead:.3f}** |"
                        )
                        print(rows[-1], flush=True)
            finally:
                proxy.terminate()
                proxy.wait()
    finally:
        container.terminate()
        container.wait()
    print()
    print(
        "| stack | body | clients | container direct, ms CPU "
        "| through it: container + proxy, ms CPU | overhead, ms CPU |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
