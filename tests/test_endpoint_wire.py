"""The API's HTTP/1.1 on both sides, in this process, against a scripted container: answers
in every framing (Content-Length in pieces, chunked, up to the close, after a 100 Continue),
bodies in pieces and over many reads, pipelined requests, stale keep-alive connections, and
large bodies through the reused buffers with every byte in its place."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from serving.endpoint.config import EndpointConfig, VariantConfig
from serving.endpoint.connection import Connections
from serving.endpoint.containers import Variant
from serving.endpoint.replies import TimedOut
from serving.endpoint.service import Service
from serving.endpoint.settings import EndpointSettings
from serving.endpoint.upstream import Container

PATH = "/endpoints/e/invocations"


@dataclass
class Script:
    """What the scripted container answers a request's body with: the writes, with a pause
    before each, and whether it then closes the connection."""

    answer: Callable[[bytes], list[bytes]]
    pause: float = 0.0
    close: bool = False
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)


def length_answer(body: bytes) -> list[bytes]:
    """Echo the body, Content-Length framed, head and body in two writes."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/x-echo\r\nContent-Length: {len(body)}"
    return [(head + "\r\n\r\n").encode(), body]


class _Scripted(asyncio.Protocol):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.script.connections += 1
        self.script.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.script.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            if head.startswith(b"GET /ping"):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                continue
            self.script.bodies.append(body)
            asyncio.get_running_loop().create_task(self._answer(body))

    async def _answer(self, body: bytes) -> None:
        for piece in self.script.answer(body):
            if self.script.pause:
                await asyncio.sleep(self.script.pause)
            self.transport.write(piece)
        if self.script.close:
            self.transport.close()


class Api:
    """The API (one endpoint ``e``, one variant) and a scripted container, on one event loop
    in a thread of this process."""

    def __init__(self, script: Script, max_body: int = 6 * 1024 * 1024) -> None:
        self.script = script
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever)
        self.thread.start()
        self.container = self.run(self.loop.create_server(lambda: _Scripted(script), "127.0.0.1"))
        port = self.container.sockets[0].getsockname()[1]
        config = VariantConfig("AllTraffic", None, f"http://127.0.0.1:{port}")
        variant = Variant("e", EndpointConfig("e", (config,)).variants[0], 10.0)
        variant.container = self.upstream = Container("127.0.0.1", port)
        settings = EndpointSettings(timeout=10.0)
        self.connections = Connections(Service(settings, {"e": [variant]}).start, max_body)
        self.server = self.run(self.loop.create_server(self.connections.protocol, "127.0.0.1"))
        self.port = self.server.sockets[0].getsockname()[1]

    def small_send_buffer(self, client: socket.socket) -> None:
        """The API's kernel send buffer toward ``client`` made small, so that what the client
        does not read waits in the API's transport rather than in the kernel."""

        async def shrink() -> None:
            for connection in self.connections.open:
                assert connection.transport is not None
                own = connection.transport.get_extra_info("socket")
                if own.getpeername() == client.getsockname():
                    own.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
                    return
            raise AssertionError("no such connection")

        self.run(shrink())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            self.connections.stop()
            await self.connections.all_closed.wait()
            self.upstream.close()
            self.container.close()
            for transport in list(self.script.transports):
                transport.close()
            while self.script.transports:  # their connection_lost, and the pool's, run
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.01)

        self.run(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    made: list[Api] = []

    def make(script: Script, **kwargs: Any) -> Api:
        made.append(Api(script, **kwargs))
        return made[-1]

    yield make
    for api in made:
        api.close()


def request(body: bytes, path: str = PATH) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-echo\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Reader:
    """Answers read off a socket, one after another."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""

    def _fill(self) -> None:
        data = self.connection.recv(1 << 20)
        if not data:
            raise EOFError
        self.buffer += data

    def head(self) -> bytes:
        """The next answer's head; what came of its body stays in ``buffer``."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        status_line, *lines = self.head().decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body


def connect(api: Api, receive_buffer: int = 0) -> tuple[socket.socket, Reader]:
    connection = socket.socket()
    connection.settimeout(30)
    if receive_buffer:  # set before connecting: the window the API may fill
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.connect(("127.0.0.1", api.port))
    return connection, Reader(connection)


def exchange(api: Api, body: bytes) -> tuple[int, dict[str, str], bytes]:
    connection, reader = connect(api)
    with connection:
        connection.sendall(request(body))
        return reader.answer()


def chunked(body: bytes) -> list[bytes]:
    pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: a/b\r\n\r\n"]
    for start in range(0, len(body), 7):
        piece = body[start : start + 7]
        pieces.append(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
    return [*pieces, b"0\r\nTrailer: x\r\n\r\n"]


@pytest.mark.parametrize(
    ("answer", "close"),
    [
        (length_answer, False),
        (chunked, False),
        (lambda body: [b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n\r\n", body], True),  # to close
        (lambda body: [b"HTTP/1.1 100 Continue\r\n\r\n", *length_answer(body)], False),
        (lambda body: [bytes([byte]) for byte in b"".join(length_answer(body))], False),
    ],
    ids=["content-length", "chunked", "until-close", "100-continue", "byte-by-byte"],
)
def test_every_framing_of_an_answer_arrives_whole(
    make_api: Callable[..., Api], answer: Callable[[bytes], list[bytes]], close: bool
) -> None:
    api = make_api(Script(answer, pause=0.001, close=close))
    body = b"the quick brown fox jumps over the lazy dog, " * 3
    for _ in range(2):  # the second on the same container connection, or on a new one
        status, headers, received = exchange(api, body)
        assert (status, received) == (200, body)
        assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"


def test_a_request_in_pieces_and_pipelined_requests(make_api: Callable[..., Api]) -> None:
    api = make_api(Script(length_answer))
    connection, reader = connect(api)
    with connection:
        data = request(b"first") + request(b"second") + request(b"x" * 100_000)
        for start in range(0, len(data), 4096):  # heads and bodies cut anywhere
            connection.sendall(data[start : start + 4096])
        assert [reader.answer()[2] for _ in range(3)] == [b"first", b"second", b"x" * 100_000]
    assert api.script.bodies == [b"first", b"second", b"x" * 100_000]


def test_many_pipelined_requests_answered_at_once(make_api: Callable[..., Api]) -> None:
    """Requests the API refuses are answered as they are read, one after another (a loop,
    not a recursion that thousands of them would overflow)."""
    api = make_api(Script(length_answer))
    connection, reader = connect(api)
    with connection:
        connection.sendall(request(b"", "/nowhere") * 3000 + request(b"last"))
        statuses = [reader.answer()[0] for _ in range(3000)]
        assert set(statuses) == {404}
        assert reader.answer()[:3:2] == (200, b"last")


def test_a_keep_alive_connection_the_container_closed_is_replaced(
    make_api: Callable[..., Api],
) -> None:
    """The container closes each connection after its answer without saying so: the API
    finds its pooled connection closed and sends the request again on a new one."""
    api = make_api(Script(length_answer, close=True))
    for number in range(5):
        assert exchange(api, f"request {number}".encode())[2] == f"request {number}".encode()
    assert api.script.connections >= 5
    assert len(api.script.bodies) == 5


def test_large_bodies_through_the_reused_buffers(make_api: Callable[..., Api]) -> None:
    """Bodies of several MiB in and out, from concurrent clients, sizes and contents all
    different: each answer is its own request's body, byte for byte."""
    api = make_api(Script(length_answer))

    def client(seed: int) -> list[bool]:
        connection, reader = connect(api)
        results = []
        with connection:
            for size in (3 << 20, 70_000, 1 << 20, 5 << 20, 64 * 1024):
                body = hashlib.sha256(str(seed).encode()).digest() * (size // 32)
                body += os.urandom(size - len(body))
                connection.sendall(request(body))
                status, _, received = reader.answer()
                results.append(status == 200 and received == body)
        return results

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(client, range(3)))
    assert outcomes == [[True] * 5] * 3


def test_an_answer_waiting_for_a_slow_client_stays_whole(make_api: Callable[..., Api]) -> None:
    """A client that stops reading near the end of a large answer: the end waits in the API's
    transport (which, on Python 3.12+, keeps a view of the buffer it is in) while another
    client's answers of the same size come and go; then it arrives as it was."""
    api = make_api(Script(lambda body: length_answer(body * 4)))
    slow, slow_reader = connect(api, receive_buffer=16 * 1024)
    fast, fast_reader = connect(api)
    with slow, fast:
        exchange(api, b"")  # the API has accepted both connections by now
        api.small_send_buffer(slow)
        body = os.urandom(2 << 20)
        slow.sendall(request(body))
        slow_reader.head()
        received = slow_reader.buffer
        while len(received) < len(body) * 4 - 128 * 1024:  # all but the end
            received += slow.recv(1 << 20)
        for _ in range(3):
            other = os.urandom(2 << 20)
            fast.sendall(request(other))
            assert fast_reader.answer()[2] == other * 4
        while len(received) < len(body) * 4:
            received += slow.recv(1 << 20)
        assert received == body * 4


def test_exchanges_on_one_connection_time_out_each_at_its_own_deadline() -> None:
    """The exchanges of a keep-alive connection share one timer: a short timeout after a
    long one is not kept waiting by the long one's, nor a later deadline cut short by the
    timer an earlier exchange set."""
    script = Script(lambda body: [] if body == b"slow" else length_answer(body))

    def parts(body: bytes) -> list[bytes | memoryview]:
        return [
            f"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode(),
            body,
        ]

    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Scripted(script), "127.0.0.1")
        container = Container("127.0.0.1", server.sockets[0].getsockname()[1])
        waited = []

        async def timed_out(timeout: float) -> None:
            start = loop.time()
            with pytest.raises(TimedOut):
                await container.request(parts(b"slow"), timeout)
            waited.append(loop.time() - start)

        assert (await container.request(parts(b"fast"), 60.0)).body == b"fast"
        await timed_out(0.2)  # on that connection, whose timer is set for 60 s
        assert (await container.request(parts(b"fast"), 0.3)).body == b"fast"
        await asyncio.sleep(0.2)
        await timed_out(0.3)  # the timer set 0.2 s before for 0.3 s fires first: not it
        assert (await container.request(parts(b"fast"), 0.1)).body == b"fast"
        await asyncio.sleep(0.3)  # the timer fires with no exchange under way
        await timed_out(0.2)
        container.close()
        for transport in list(script.transports):
            transport.close()
        server.close()
        await server.wait_closed()
        return waited

    waited = asyncio.run(scenario())
    assert all(
        timeout - 0.01 <= seconds < timeout + 1.0
        for timeout, seconds in zip([0.2, 0.3, 0.2], waited, strict=True)
    ), waited
    assert script.connections == 3
