"""Bad input against the real server: the right status, a short JSON message, and a server
that keeps serving afterwards."""

from __future__ import annotations

import json
import pickle
import re
import socket
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.recordio_wire import BYTES, FLOAT32, MAGIC, body, field, record, tensor
from tests.server import ServerProcess
from tests.wire import npy_bytes, npz_bytes

GOOD_ROW = b"[[1, 2, 3, 4]]"


def assert_still_serving(server: ServerProcess) -> None:
    assert server.get("/ping").status_code == 200
    response = server.post("/invocations", GOOD_ROW, {"Content-Type": "application/json"})
    assert response.status_code == 200


def assert_error(response: requests.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["error"]
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message


JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
RECORDIO = "application/x-recordio-protobuf"
ROWS_AS_RECORDIO = body(*(record({"values": tensor(FLOAT32, [1, 2, 3, i])}) for i in range(3)))

LINEAR_CASES = {
    "malformed json": (JSON, b'{"instances": [1, 2', "not valid JSON"),
    "json of the wrong nesting": (JSON, b'{"instances": 5}', '"instances" must be an array'),
    "json object of unknown form": (JSON, b'{"rows": [[1, 2, 3, 4]]}', "expected a JSON array"),
    "ragged json": (JSON, b"[[1, 2, 3, 4], [1, 2]]", "ragged"),
    "json strings": (JSON, b'[["a", "b", "c", "d"]]', "expected numbers"),
    "json null": (JSON, b"[[1, 2, null, 4]]", "expected numbers"),
    "json NaN literal": (JSON, b"[[1, 2, NaN, 4]]", "not valid JSON"),
    "ragged csv": (CSV, b"1,2,3,4\n5,6,7\n", "line 1 has 4 values, line 2 has 3"),
    "non-numeric csv": (CSV, b"1,2,3,4\n5,x,7,8\n", "line 2: column 2: 'x' is not a number"),
    "empty body": (JSON, b"", "empty"),
    "wrong rank": (JSON, b"[1, 2, 3, 4]", "expects rank 2"),
    "wrong fixed dimension": (JSON, b"[[1, 2, 3]]", "dimension 1 must be 4"),
    "wrong input name": (JSON, b'{"inputs": {"z": [[1, 2, 3, 4]]}}', "unknown input 'z'"),
    "npy of strings": (NPY, npy_bytes(np.array([["a", "b", "c", "d"]])), "dtype <U1"),
    "truncated npy": (NPY, npy_bytes(np.ones((2, 4), np.float32))[:-5], "body has 27"),
    "not npy at all": (NPY, b"hello", "not a valid .npy"),
    "npz not a zip": ("application/x-npz", b"PK\x03\x04broken", "not a valid .npz"),
    "recordio bad magic": (RECORDIO, b"\x00\x00\x00\x00\x04\x00\x00\x00abcd", "bad magic"),
    "recordio truncated": (RECORDIO, ROWS_AS_RECORDIO[:-7], "runs past the end"),
    "recordio length past the end": (
        RECORDIO,
        struct.pack("<II", MAGIC, 1 << 30) + b"\0" * 8,
        "runs past the end",
    ),
    "recordio bytes feature": (
        RECORDIO,
        body(record({"values": field(BYTES, field(1, b"raw"))})),
        "wrong tensor types",
    ),
    "recordio wrong width": (
        RECORDIO,
        body(record({"values": tensor(FLOAT32, [1, 2, 3])})),
        "dimension 1 must be 4",
    ),
}


@pytest.mark.parametrize("case", LINEAR_CASES)
def test_bad_input(linear_server: ServerProcess, case: str) -> None:
    content_type, body, fragment = LINEAR_CASES[case]
    response = linear_server.post("/invocations", body, {"Content-Type": content_type})
    assert_error(response, 400, fragment)
    assert_still_serving(linear_server)


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_pickled_npy_is_refused_without_unpickling(
    linear_server: ServerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    array = np.array([_CreatesFileWhenUnpickled(marker)], dtype=object)
    body = npy_bytes(array)
    assert b"unpickled" in body  # the pickle really is in there
    response = linear_server.post("/invocations", body, {"Content-Type": NPY})
    assert_error(response, 400, "Python objects")
    assert not marker.exists()
    npz = npz_bytes({"x": array})
    response = linear_server.post("/invocations", npz, {"Content-Type": "application/x-npz"})
    assert_error(response, 400, "Python objects")
    assert not marker.exists()
    # and the pickle was live: loading it the unsafe way would have created the file
    pickle.loads(pickle.dumps(_CreatesFileWhenUnpickled(marker))).close()  # noqa: S301 - our own
    assert marker.exists()
    assert_still_serving(linear_server)


def _chunks(size: int) -> Iterator[bytes]:
    chunk = b"1" * 65536
    for _ in range(size // len(chunk)):
        yield chunk


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_body(linear_server: ServerProcess, chunked: bool) -> None:
    size = 2 * 1024 * 1024  # the server's limit is 1 MiB
    body = _chunks(size) if chunked else b"1" * size
    response = requests.post(
        linear_server.url("/invocations"), data=body, headers={"Content-Type": CSV}, timeout=30
    )
    assert_error(response, 413, "1 MiB", "SAGEMAKER_MAX_PAYLOAD_IN_MB")
    assert_still_serving(linear_server)


def test_model_that_raises(failing_server: ServerProcess) -> None:
    ok = failing_server.post("/invocations", b"[1, 2, 3, 4]", {"Content-Type": JSON})
    assert ok.status_code == 200
    response = failing_server.post("/invocations", b"[1, 2, 3]", {"Content-Type": JSON})
    assert_error(response, 500, "the model failed", "cannot be reshaped")
    assert "Traceback" in failing_server.log()  # the traceback goes to the log instead
    again = failing_server.post("/invocations", b"[1, 2, 3, 4]", {"Content-Type": JSON})
    assert again.status_code == 200


MIXED_ROWS = {"a": [[1.0, 2.0, 3.0]], "b": [[1, 2, 3]], "c": [True]}


def _mixed(**changes: object) -> bytes:
    inputs = {**MIXED_ROWS, **changes}
    return json.dumps({"inputs": {k: v for k, v in inputs.items() if v is not None}}).encode()


MIXED_CASES = {
    "fraction for an integer input": (_mixed(b=[[1.5, 2, 3]]), "input 'b' expects int64"),
    "2 for a boolean input": (_mixed(c=[2]), "input 'c' expects bool"),
    "missing input": (_mixed(c=None), "missing input 'c'"),
    "bare array for several inputs": (b"[[1, 2, 3]]", "the model has 3 inputs (a, b, c)"),
    "rows that disagree across inputs": (
        _mixed(c=[True, False]),
        "dimension N is 1 in input 'a' but 2 in input 'c'",
    ),
    "an int64 beyond float64's exact integers": (
        _mixed(b=[[9007199254740993, 2.0, 3]]),
        "input 'b' expects int64, and some values are beyond 9007199254740992",
    ),
}


@pytest.mark.parametrize("case", MIXED_CASES)
def test_bad_input_for_several_inputs(mixed_server: ServerProcess, case: str) -> None:
    body, fragment = MIXED_CASES[case]
    response = mixed_server.post("/invocations", body, {"Content-Type": JSON})
    assert_error(response, 400, fragment)
    assert mixed_server.post("/invocations", _mixed(), {"Content-Type": JSON}).status_code == 200


def test_unknown_routes_and_methods_answer_json(linear_server: ServerProcess) -> None:
    assert_error(linear_server.get("/nowhere"), 404, "/nowhere")
    refused = linear_server.get("/invocations")
    assert_error(refused, 405, "GET /invocations")
    assert refused.headers["Allow"] == "POST"
    assert_error(linear_server.session.put(linear_server.url("/ping"), timeout=30), 405, "PUT")


def test_head_requests_get_the_headers_alone(linear_server: ServerProcess) -> None:
    for path, status in [("/ping", 200), ("/execution-parameters", 200), ("/nowhere", 404)]:
        response = linear_server.session.head(linear_server.url(path), timeout=30)
        assert response.status_code == status
        assert response.content == b""
    parameters = linear_server.session.head(linear_server.url("/execution-parameters"))
    assert int(parameters.headers["Content-Length"]) > 0  # what GET would send
    assert "dropping per RFC 9110" not in linear_server.log()  # gunicorn had nothing to drop


CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"
TIMESTAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] [\w.]+: ")


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        (JSON, GOOD_ROW, 200),
        (JSON, b"[[1, 2]]", 400),
        ("text/plain", GOOD_ROW, 415),
    ],
)
def test_custom_attributes_are_echoed(
    linear_server: ServerProcess, content_type: str, body: bytes, status: int
) -> None:
    attributes = "trace_id=abc-123,accept_eula=true"
    response = linear_server.post(
        "/invocations", body, {"Content-Type": content_type, CUSTOM: attributes}
    )
    assert response.status_code == status
    assert response.headers[CUSTOM] == attributes


def test_custom_attributes_of_1024_characters(linear_server: ServerProcess) -> None:
    visible_ascii = "".join(chr(c) for c in range(33, 127))
    attributes = (visible_ascii * 11)[:1024]
    response = linear_server.post(
        "/invocations", GOOD_ROW, {"Content-Type": JSON, CUSTOM: attributes}
    )
    assert response.status_code == 200
    assert response.headers[CUSTOM] == attributes


def test_no_custom_attributes_header_without_one(linear_server: ServerProcess) -> None:
    response = linear_server.post("/invocations", GOOD_ROW, {"Content-Type": JSON})
    assert CUSTOM not in response.headers


def test_unknown_request_headers_are_ignored(linear_server: ServerProcess) -> None:
    headers = {
        "Content-Type": JSON,
        "X-Amzn-SageMaker-Target-Variant": "v1",
        "X-Amzn-SageMaker-Inference-Id": "42",
        "X-Something-Else": "anything",
    }
    assert linear_server.post("/invocations", GOOD_ROW, headers).status_code == 200


def test_requests_but_not_pings_are_access_logged(linear_server: ServerProcess) -> None:
    for _ in range(3):
        assert linear_server.get("/ping").status_code == 200
    marker = f"/invocations?probe={uuid.uuid4().hex}"
    linear_server.post(marker, GOOD_ROW, {"Content-Type": JSON})
    log = linear_server.wait_for_log(f'"POST {marker} HTTP/1.1" 200')
    assert "/ping" not in log
    line = next(line for line in log.splitlines() if marker in line)
    assert TIMESTAMPED.match(line)
    assert f" INFO [{linear_server.worker_pids()[0]}] gunicorn.access: 127.0.0.1 " in line


def test_logs_are_one_line_per_event(failing_server: ServerProcess) -> None:
    failing_server.post("/invocations", b"[1, 2, 3]", {"Content-Type": JSON})  # logs a traceback
    lines = failing_server.log().splitlines()
    assert any("Traceback" in line for line in lines)
    assert all(TIMESTAMPED.match(line) for line in lines), [
        line for line in lines if not TIMESTAMPED.match(line)
    ]
    assert any("serving.server: configuration: handler=" in line for line in lines)


def test_client_errors_are_logged_without_a_stack_trace(linear_server: ServerProcess) -> None:
    linear_server.post("/invocations", b"[[1, 2]]", {"Content-Type": JSON})
    log = linear_server.log()
    assert "400 InvalidInput: input 'x' expects shape" in log
    assert "Traceback" not in log  # this server has only seen client errors


def test_connections_are_kept_alive(linear_server: ServerProcess) -> None:
    response = linear_server.post("/invocations", GOOD_ROW, {"Content-Type": JSON})
    assert response.headers["Connection"] == "keep-alive"


def test_pipelined_requests_on_one_connection_each_get_their_answer(
    linear_server: ServerProcess,
) -> None:
    """Requests sent back to back, before any answer: each body ends where its Content-Length
    says, however the bytes arrive, and the next request starts right after it."""
    bodies = [b"[[1, 2, 3, 4]]", b"[[1, 2, 3, 4], [5, 6, 7, 8]]", b"[[0, 0, 0, 1]]"]
    requests_bytes = b"".join(
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in bodies
    )
    expected = [linear_server.post("/invocations", body, {"Content-Type": JSON}) for body in bodies]
    with socket.create_connection(("127.0.0.1", linear_server.port), timeout=10) as conn:
        conn.sendall(requests_bytes)
        stream = conn.makefile("rb")
        for want in expected:
            head = b"".join(iter(stream.readline, b"\r\n"))
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            assert stream.read(length) == want.content


def test_a_body_shorter_than_its_content_length_is_refused(linear_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", linear_server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: 1000\r\n\r\n1,2,3,4\n"
        )
        conn.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: conn.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"request body ended after 8 of its 1000 bytes" in reply
    assert_still_serving(linear_server)


@pytest.mark.parametrize(
    ("request_head", "status", "fragment"),
    [
        (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, "Content"),
        (b"POST /invocations HTTP/9.9\r\nHost: x\r\n\r\n", 400, "HTTP Version"),
        (b"BR\x00KEN / HTTP/1.1\r\n\r\n", 400, "Method"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "URI Too Long"),
        (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            "TRANSFER",
        ),
        # gunicorn measures a request line after an empty line itself
        (b"\r\nGET /ping?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
        (b"GET /ping?\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Request Line"),
        (
            b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-Ssl: off\r\n\r\n",
            400,
            "scheme",
        ),
    ],
)
def test_requests_the_http_parser_refuses_get_json_too(
    linear_server: ServerProcess, request_head: bytes, status: int, fragment: str
) -> None:
    with socket.create_connection(("127.0.0.1", linear_server.port), timeout=10) as conn:
        conn.sendall(request_head)
        reply = b"".join(iter(lambda: conn.recv(65536), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), reply
    assert b"Content-Type: application/json" in head
    message = json.loads(body)["error"]
    assert fragment in message, message
    assert_still_serving(linear_server)


def test_a_malformed_chunked_body_is_a_client_error(linear_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", linear_server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n1,2,3,4\n\r\n0\r\n\r\n"
        )
        reply = b"".join(iter(lambda: conn.recv(65536), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert "malformed chunked request body" in json.loads(body)["error"]
    assert "Traceback" not in linear_server.log().split("malformed chunked")[-1]
    assert_still_serving(linear_server)
