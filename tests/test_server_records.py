"""Batch transform's MultiRecord requests against a real server that reads them in small
chunks: one output line per input line, in order, and bad records named by line."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.server import ServerProcess, running_server
from tests.wire import run_onnxruntime

CSV = {"Content-Type": "text/csv", "Accept": "text/csv"}
ROWS = 10_000


@pytest.fixture(scope="module")
def chunking_server(linear_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    # 2 KB chunks: a 10,000-line body is answered in about a hundred pieces, the answers
    # kept in a temporary file past 10 KB
    arguments = ["--model-dir", str(linear_model.parent), "--record-chunk-mb", "0.002"]
    arguments += ["--record-spool-mb", "0.01"]
    environ = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5"}
    with running_server(arguments, model_root / "chunking.log", environ) as server:
        yield server


@pytest.fixture(scope="module")
def placeholder_server(linear_model: Path, model_root: Path) -> Iterator[ServerProcess]:
    arguments = ["--model-dir", str(linear_model.parent), "--record-chunk-mb", "0.002"]
    environ = {"SERVING_BAD_RECORDS": "placeholder"}
    with running_server(arguments, model_root / "placeholder.log", environ) as server:
        yield server


def table(rows: int) -> np.ndarray:
    generator = np.random.default_rng(7)
    return generator.normal(size=(rows, 4)).astype(np.float32)


def csv_body(values: np.ndarray, newline: bytes = b"\n") -> bytes:
    return newline.join(b",".join(str(v).encode() for v in row) for row in values)


def read_csv(body: bytes) -> np.ndarray:
    return np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float32)


def replace_line(body: bytes, number: int, text: bytes) -> bytes:
    lines = body.split(b"\n")
    lines[number - 1] = text
    return b"\n".join(lines)


def assert_serving(server: ServerProcess) -> None:
    assert server.get("/ping").status_code == 200
    response = server.post("/invocations", b"1,2,3,4\n", CSV)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_one_output_line_per_input_line(
    chunking_server: ServerProcess, linear_model: Path, newline: bytes
) -> None:
    values = table(ROWS)
    response = chunking_server.post("/invocations", csv_body(values, newline), CSV)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/csv"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.content.count(b"\n") == ROWS
    expected = run_onnxruntime(linear_model, {"x": values})["y"]
    np.testing.assert_allclose(read_csv(response.content), expected, rtol=1e-6, atol=1e-7)


def test_answers_kept_in_memory_say_their_length(
    chunking_server: ServerProcess, linear_model: Path
) -> None:
    values = table(3)  # answers under the spool limit: sent from memory, in parts
    response = chunking_server.post("/invocations", csv_body(values), CSV)
    assert response.status_code == 200, response.text
    assert "Transfer-Encoding" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.content)
    expected = run_onnxruntime(linear_model, {"x": values})["y"]
    np.testing.assert_allclose(read_csv(response.content), expected, rtol=1e-6, atol=1e-7)


def test_a_chunked_request_body(chunking_server: ServerProcess, linear_model: Path) -> None:
    values = table(3_000)
    body = csv_body(values) + b"\n"
    pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
    response = chunking_server.session.post(
        chunking_server.url("/invocations"), data=pieces, headers=CSV, timeout=30
    )
    assert response.status_code == 200, response.text
    expected = run_onnxruntime(linear_model, {"x": values})["y"]
    np.testing.assert_allclose(read_csv(response.content), expected, rtol=1e-6, atol=1e-7)


def test_json_lines_in_and_out(chunking_server: ServerProcess, linear_model: Path) -> None:
    values = table(2_000)
    body = b"".join(orjson.dumps({"features": row.tolist()}) + b"\n" for row in values)
    headers = {"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"}
    response = chunking_server.post("/invocations", body, headers)
    assert response.status_code == 200, response.text
    got = [orjson.loads(line)["predictions"] for line in response.content.splitlines()]
    expected = run_onnxruntime(linear_model, {"x": values})["y"]
    np.testing.assert_allclose(np.array(got, np.float32), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"1,x,3,4", "text/csv line 9001: column 2: 'x' is not a number"),
        (b"", "text/csv line 9001: is empty"),
        (b"1,2,3", "text/csv line 9001: input 'x' expects shape [N, 4], got [1, 3]"),
    ],
)
def test_a_bad_record_far_into_the_body_is_named_by_its_line(
    chunking_server: ServerProcess, text: bytes, message: str
) -> None:
    body = replace_line(csv_body(table(ROWS)), 9001, text)
    response = chunking_server.post("/invocations", body, CSV)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert_serving(chunking_server)


def test_an_oversize_chunked_body_is_refused(chunking_server: ServerProcess) -> None:
    body = csv_body(table(30_000))  # about 1 MB, twice the limit
    assert len(body) > 1024 * 1024
    pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response = chunking_server.session.post(
        chunking_server.url("/invocations"), data=pieces, headers=CSV, timeout=30
    )
    assert response.status_code == 413
    assert "0.5 MiB limit" in response.json()["error"]
    assert_serving(chunking_server)


def test_placeholders_keep_every_line_in_place(
    placeholder_server: ServerProcess, linear_model: Path
) -> None:
    values = table(ROWS)
    bad = {1: b"abc", 4000: b"", 4001: b"1,2", ROWS: b"1,2,3,4,5"}
    body = csv_body(values)
    for number, text in bad.items():
        body = replace_line(body, number, text)
    response = placeholder_server.post("/invocations", body, CSV)
    assert response.status_code == 200, response.text
    lines = response.content.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == ROWS
    assert [number for number, line in enumerate(lines, start=1) if not line] == list(bad)
    good = [number - 1 for number in range(1, ROWS + 1) if number not in bad]
    expected = run_onnxruntime(linear_model, {"x": values[good]})["y"]
    got = read_csv(b"\n".join(lines[i] for i in good))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert "placeholder for text/csv line 4000: is empty" in placeholder_server.log()


def test_answers_spooled_to_a_file_leave_no_file_open(chunking_server: ServerProcess) -> None:
    for _ in range(3):
        response = chunking_server.post("/invocations", csv_body(table(2_000)), CSV)
        assert response.status_code == 200
    # The client has the whole answer a moment before the worker closes the file.
    deadline = time.monotonic() + 5
    while spooled_files(chunking_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not spooled_files(chunking_server)


def spooled_files(server: ServerProcess) -> list[str]:
    """Deleted temporary files the server's processes hold open."""
    tmp = tempfile.gettempdir()
    return [f for f in server.open_files() if f.startswith(tmp) and f.endswith("(deleted)")]
