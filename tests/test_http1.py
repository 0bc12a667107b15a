"""The worker's own HTTP/1.1 loop: what it serves against the real server, byte for byte on a
raw connection, and where it hands a connection to gunicorn."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

import gevent.socket
import pytest
from gunicorn import util as gunicorn_util
from gunicorn.config import Config

from serving.http1 import HEAD_WITH_BODY_BYTES, Http11Loop, _asks_close, _Date, _plain, _send
from serving.worker import _TrackedSocket
from tests.server import ServerProcess

JSON_ROW = b"[[1, 2, 3, 4]]"


def post(body: bytes, content_type: str = "application/json", *headers: str) -> bytes:
    lines = "".join(f"{header}\r\n" for header in headers)
    return (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{lines}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


CHUNKED_ROW = (
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(JSON_ROW), JSON_ROW)
)


def read_response(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """The next response's head and body from ``stream``."""
    head = b"".join(iter(stream.readline, b"\r\n"))
    found = re.search(rb"Content-Length: (\d+)", head)
    assert found is not None, head
    return head, stream.read(int(found.group(1)))


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


@pytest.fixture(scope="module")
def answer(linear_server: ServerProcess) -> bytes:
    """The body of the answer to ``JSON_ROW``."""
    return linear_server.post(
        "/invocations", JSON_ROW, {"Content-Type": "application/json"}
    ).content


@pytest.mark.parametrize("split", [None, 10, 1])
def test_a_body_left_unread_is_skipped_and_the_next_request_is_served(
    linear_server: ServerProcess, answer: bytes, split: int | None
) -> None:
    """A 415 leaves its body unread: it is dropped whether it came with its head (``None``) or
    after it, and the next request on the connection starts where it should."""
    refused = post(b"x" * 5000, "application/x-unknown")
    head_end = refused.index(b"\r\n\r\n") + 4
    with connect(linear_server) as conn:
        if split is None:
            conn.sendall(refused + post(JSON_ROW))
        else:
            conn.sendall(refused[: head_end + split])
            time.sleep(0.1)  # answered before the rest of its body arrives
            conn.sendall(refused[head_end + split :] + post(JSON_ROW))
        stream = conn.makefile("rb")
        head, _ = read_response(stream)
        assert head.startswith(b"HTTP/1.1 415"), head
        head, body = read_response(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == answer


def test_a_head_that_arrives_in_pieces_is_served(
    linear_server: ServerProcess, answer: bytes
) -> None:
    request = post(JSON_ROW)
    with connect(linear_server) as conn:
        for start in range(0, len(request), 7):
            conn.sendall(request[start : start + 7])
            time.sleep(0.005)
        head, body = read_response(conn.makefile("rb"))
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == answer


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    linear_server: ServerProcess, answer: bytes
) -> None:
    request = post(JSON_ROW, "application/json", "Expect: 100-continue")
    head_end = request.index(b"\r\n\r\n") + 4
    with connect(linear_server) as conn:
        conn.sendall(request[:head_end])
        assert conn.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(request[head_end:])
        head, body = read_response(conn.makefile("rb"))
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body == answer


@pytest.mark.parametrize("together", [True, False])
def test_after_a_request_gunicorn_serves_it_serves_the_rest_of_the_connection(
    linear_server: ServerProcess, answer: bytes, together: bool
) -> None:
    """A chunked body is gunicorn's to read: the loop hands it the connection with every byte
    received, whether the requests come in one write or one by one."""
    requests_bytes = [post(JSON_ROW), CHUNKED_ROW, post(JSON_ROW), CHUNKED_ROW]
    with connect(linear_server) as conn:
        stream = conn.makefile("rb")
        if together:
            conn.sendall(b"".join(requests_bytes))
        for request in requests_bytes:
            if not together:
                conn.sendall(request)
            head, body = read_response(stream)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert body == answer


def test_percent_escapes_in_the_path_are_decoded(linear_server: ServerProcess) -> None:
    with connect(linear_server) as conn:
        conn.sendall(b"GET /p%69ng HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(conn.makefile("rb"))
    assert head.startswith(b"HTTP/1.1 200"), head


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"HTTP/1.1 200 OK"),
        (b"GET /ping HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK"),  # gunicorn's, handed over
    ],
)
def test_the_connection_ends_when_the_request_asks(
    linear_server: ServerProcess, request_bytes: bytes, status_line: bytes
) -> None:
    with connect(linear_server) as conn:
        conn.sendall(request_bytes)
        reply = b"".join(iter(lambda: conn.recv(65536), b""))  # ends: the server closed it
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(status_line + b"\r\n"), head
    assert b"\r\nConnection: close" in head
    assert body == b""


def test_responses_carry_the_headers_gunicorn_sends(linear_server: ServerProcess) -> None:
    with connect(linear_server) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(conn.makefile("rb"))
    lines = head.split(b"\r\n")
    assert lines[:2] == [b"HTTP/1.1 200 OK", b"Server: gunicorn"]
    assert lines[3] == b"Connection: keep-alive"
    assert re.fullmatch(rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[2])


def test_a_head_answer_has_no_body_on_the_connection(linear_server: ServerProcess) -> None:
    with connect(linear_server) as conn:
        conn.sendall(
            b"HEAD /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        stream = conn.makefile("rb")
        head = b"".join(iter(stream.readline, b"\r\n"))
        assert re.search(rb"Content-Length: [1-9]", head), head  # GET's length, no body
        assert stream.readline() == b"HTTP/1.1 200 OK\r\n"  # the next answer comes next


def test_access_lines_are_the_same_on_either_path(linear_server: ServerProcess) -> None:
    """One request served by the loop, one (chunked) by gunicorn: the same line."""
    uri = f"/invocations?trace={uuid.uuid4().hex}"
    with connect(linear_server) as conn:
        conn.sendall(post(JSON_ROW).replace(b"/invocations", uri.encode(), 1))
        read_response(conn.makefile("rb"))
    with connect(linear_server) as conn:
        conn.sendall(CHUNKED_ROW.replace(b"/invocations", uri.encode(), 1))
        read_response(conn.makefile("rb"))
    deadline = time.monotonic() + 5  # access lines are written out when the loop is idle
    while len(lines := [line for line in linear_server.log().splitlines() if uri in line]) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    assert len(lines) == 2, lines
    for line in lines:
        assert re.search(rf'127\.0\.0\.1 "POST {re.escape(uri)} HTTP/1\.1" 200 \d+ \d+ms$', line)


def test_a_head_that_never_ends_goes_to_gunicorn_s_limits(linear_server: ServerProcess) -> None:
    with connect(linear_server) as conn:
        conn.sendall(b"GET /" + b"a" * 1_000_000)  # no end of line, let alone of the head
        reply = conn.recv(65536)
    assert reply.startswith(b"HTTP/1.1 431"), reply


def test_a_client_that_resets_mid_answer_is_not_an_error(linear_server: ServerProcess) -> None:
    errors = linear_server.log().count(" ERROR ")
    for _ in range(5):
        conn = connect(linear_server)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sendall(b"GET /execution-parameters HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        conn.close()  # a reset, while the answers are being sent
    assert linear_server.get("/ping").status_code == 200
    time.sleep(0.5)  # whatever the worker logs about it is written by now
    assert linear_server.log().count(" ERROR ") == errors


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.parametrize(
    ("parts", "writes"),
    [
        ([b"hello"], [HEAD + b"hello"]),
        ([b"", b"hel", b"lo"], [HEAD + b"hel", b"lo"]),
        ([], [HEAD]),
        ([b"x" * (HEAD_WITH_BODY_BYTES + 1)], [HEAD, b"x" * (HEAD_WITH_BODY_BYTES + 1)]),
    ],
)
def test_a_head_goes_out_with_a_small_first_part(parts: list[bytes], writes: list[bytes]) -> None:
    sock = RecordingSocket()
    assert _send(sock, HEAD, parts) == sum(map(len, parts))
    assert sock.sent == writes


def environ(**changes: Any) -> dict[str, Any]:
    plain = {
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/invocations",
        "QUERY_STRING": "",
        "CONTENT_LENGTH": "12",
    }
    return {key: value for key, value in {**plain, **changes}.items() if value is not None}


@pytest.mark.parametrize(
    ("changes", "plain"),
    [
        ({}, True),
        ({"CONTENT_LENGTH": None}, True),
        ({"HTTP_EXPECT": "100-Continue"}, True),
        ({"HTTP_EXPECT": "something-else"}, False),
        ({"SERVER_PROTOCOL": "HTTP/1.0"}, False),
        ({"PATH_INFO": "/p%69ng"}, False),
        ({"PATH_INFO": "http://host/ping"}, False),
        ({"PATH_INFO": "/ping#here"}, False),
        ({"PATH_INFO": "/\xffping"}, False),
        ({"QUERY_STRING": "a=\xff"}, False),
        ({"QUERY_STRING": "a=1#here"}, False),
        ({"CONTENT_LENGTH": "12,12"}, False),
        ({"CONTENT_LENGTH": "+12"}, False),
        ({"CONTENT_LENGTH": "1²"}, False),
        ({"HTTP_TRANSFER_ENCODING": "chunked"}, False),
        ({"HTTP_UPGRADE": "h2c"}, False),
        ({"HTTP_HTTP2_SETTINGS": "AAMAAABkAAQAoAAAAAIAAAAA"}, False),
        ({"HTTP_X_FORWARDED_PROTO": "https"}, False),  # gunicorn decides the scheme
    ],
)
def test_which_requests_the_loop_serves(changes: dict[str, Any], plain: bool) -> None:
    handed_over = Http11Loop(LoopWorker(hello))._handed_over  # as set up by gunicorn's Config
    assert _plain(environ(**changes), handed_over) is plain


def test_the_loop_serves_only_where_gunicorn_s_settings_are_its_own() -> None:
    cfg = Config()
    assert Http11Loop.serves(cfg)
    for name, value in [
        ("limit_request_line", 0),
        ("limit_request_fields", 0),
        ("limit_request_field_size", 0),
        ("proxy_protocol", "v1"),
        ("http2_cleartext", "upgrade"),
        ("header_map", "refuse"),
    ]:
        changed = Config()
        changed.set(name, value)
        assert not Http11Loop.serves(changed), name


def test_the_date_header_is_gunicorn_s() -> None:
    for _ in range(3):  # unless the second turns in between
        if _Date.now() == gunicorn_util.http_date():
            return
    raise AssertionError(_Date.now())


class LoopWorker:
    """What the loop uses of a gunicorn worker: its settings, app, logger and counters."""

    def __init__(self, app: Any, max_requests: int = 1000) -> None:
        self.cfg = Config()
        self.wsgi = app
        self.log = self
        self.alive = True
        self.nr = 0
        self.max_requests = max_requests
        self.lines: list[tuple[Any, ...]] = []
        self.sock: _TrackedSocket | None = None  # the connection being served

    def served(self, *line: Any) -> None:
        self.lines.append(line)


def serve(worker: LoopWorker, requests_bytes: bytes, then_close: bool = True) -> bytes:
    """What the loop answers to ``requests_bytes``, sent before it starts, in this thread (on
    gevent's sockets, so that its keep-alive timeout can end a wait)."""
    assert Http11Loop.serves(worker.cfg)
    client, server = gevent.socket.socketpair()
    with client, server:
        client.sendall(requests_bytes)
        if then_close:
            client.shutdown(socket.SHUT_WR)  # the loop's next read finds the end
        worker.sock = _TrackedSocket(server)
        Http11Loop(worker).serve(worker.sock, ("127.0.0.1", 5000), ("127.0.0.1", 80))
        server.close()
        return b"".join(iter(lambda: client.recv(65536), b""))


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


PING = b"GET /ping?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"


def test_each_answer_is_counted_and_access_logged() -> None:
    worker = LoopWorker(hello)
    reply = serve(worker, PING * 2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert reply.endswith(b"\r\n\r\nhello")
    assert worker.nr == 2
    assert [line[:5] for line in worker.lines] == [
        ("127.0.0.1", "GET /ping?x=1 HTTP/1.1", "/ping", "200 OK", 5)
    ] * 2


def test_a_request_already_received_is_not_idle() -> None:
    """A stop closes idle connections: a pipelined request that came with the one before it
    has been read already, and its connection must not look idle."""
    worker = LoopWorker(hello)
    idle: list[bool] = []

    def noting(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        assert worker.sock is not None
        idle.append(worker.sock.idle())
        return hello(environ, start_response)

    worker.wsgi = noting
    serve(worker, PING * 2)
    assert idle == [False, False]


def test_the_last_request_before_a_restart_ends_its_connection() -> None:
    worker = LoopWorker(hello, max_requests=1)
    reply = serve(worker, PING * 2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1  # the second is left unread
    assert b"\r\nConnection: close\r\n" in reply
    assert not worker.alive


def test_a_stop_during_a_request_ends_its_connection() -> None:
    worker = LoopWorker(hello)

    def stopping(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        worker.alive = False
        return hello(environ, start_response)

    worker.wsgi = stopping
    reply = serve(worker, PING * 2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1
    assert b"\r\nConnection: close\r\n" in reply


def test_without_keep_alive_each_connection_serves_one_request() -> None:
    worker = LoopWorker(hello)
    worker.cfg.set("keepalive", 0)
    reply = serve(worker, PING * 2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1
    assert b"\r\nConnection: close\r\n" in reply


def test_the_app_s_answer_is_closed_once_sent() -> None:
    closed: list[bool] = []

    class Answer(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Answer:
        hello(environ, start_response)
        return Answer([b"hello"])

    assert serve(LoopWorker(app), PING).endswith(b"hello")
    assert closed == [True]


def test_a_body_still_arriving_after_the_answer_is_not_idle() -> None:
    """The app answered without reading its body: the rest of it is still to come, so a stop
    must not close the connection as idle."""
    worker = LoopWorker(hello)
    request = post(b"x" * 10)
    client, server = gevent.socket.socketpair()
    with client, server:
        client.sendall(request[:-5])
        worker.sock = _TrackedSocket(server)
        loop = Http11Loop(worker)
        serving = gevent.spawn(loop.serve, worker.sock, ("127.0.0.1", 5000), ("127.0.0.1", 80))
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        assert not worker.sock.idle()
        client.sendall(request[-5:])
        client.shutdown(socket.SHUT_WR)
        serving.join(5)
        assert serving.dead


def test_a_stop_while_the_answer_is_sent_ends_its_connection() -> None:
    worker = LoopWorker(hello)

    def stopping_midway(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hel"
        worker.alive = False
        yield b"lo"

    worker.wsgi = stopping_midway
    reply = serve(worker, PING * 2)
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1


def test_a_body_that_never_comes_ends_the_connection_after_the_keep_alive() -> None:
    """The app answers without reading the body; the rest of the body is waited for no longer
    than a next request would be."""
    worker = LoopWorker(hello)
    worker.cfg.set("keepalive", 1)
    started = time.monotonic()
    reply = serve(worker, post(b"x" * 10)[:-5], then_close=False)  # 5 bytes short
    assert reply.count(b"HTTP/1.1 200 OK\r\n") == 1
    assert 0.9 < time.monotonic() - started < 3


def test_an_idle_connection_ends_after_the_keep_alive() -> None:
    worker = LoopWorker(hello)
    worker.cfg.set("keepalive", 1)
    started = time.monotonic()
    assert serve(worker, PING, then_close=False).count(b"HTTP/1.1 200 OK\r\n") == 1
    assert 0.9 < time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("connection", "close"),
    [
        ("close", True),
        ("Keep-Alive, Close", True),
        ("foo,\tclose", True),
        ("keep-alive", False),
        ("closed", False),
    ],
)
def test_connection_close_is_one_option_among_others(connection: str, close: bool) -> None:
    assert _asks_close({"HTTP_CONNECTION": connection}) is close


def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise RuntimeError("broken app")


def line_break_in_a_header(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain\r\nX-Injected: 1")])
    return [b""]


def not_latin_1(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/\u2603")])
    return [b""]


@pytest.mark.parametrize("app", [failing, line_break_in_a_header, not_latin_1])
def test_an_app_that_fails_or_sends_a_broken_header_gets_a_json_500(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    worker = LoopWorker(app)
    reply = serve(worker, PING * 2)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"\r\nConnection: close\r\n" in head
    assert b"X-Injected" not in head
    assert json.loads(body) == {"error": "internal server error"}
    assert "error answering GET /ping" in caplog.text
    assert worker.lines[0][3] == "500 Internal Server Error"
