"""Multi-record bodies in process: chunks of whole lines, one output line per input line."""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from handlers import HandlerConfig, InvocationContext
from handlers.codecs.lines import count_lines, split_lines
from handlers.errors import InvalidInput, RecordError
from handlers.onnx_handler import OnnxHandler
from handlers.records import RecordChunks, answers_in_chunks, line_chunks
from tests.wire import run_onnxruntime

CSV = "text/csv"
JSONL = "application/jsonlines"


def chunks_of(body: bytes, size: int) -> Iterator[bytes]:
    return line_chunks(io.BytesIO(body).read, size)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 1000])
@pytest.mark.parametrize(
    "body", [b"1,2\n3,4\n", b"1,2\r\n3,4\r\n55,6", b"a\n\nbb\n", b"longer line\nx"]
)
def test_chunks_hold_whole_lines_and_the_whole_body(body: bytes, size: int) -> None:
    chunks = list(chunks_of(body, size))
    assert b"".join(chunks) == body
    assert all(chunk.endswith(b"\n") for chunk in chunks[:-1])


@pytest.fixture(scope="module")
def handler(linear_model: Path) -> OnnxHandler:
    handler = OnnxHandler(HandlerConfig(model_dir=linear_model.parent))
    handler.load()
    return handler


def rows(count: int) -> np.ndarray:
    return np.arange(count * 4, dtype=np.float32).reshape(count, 4) / 8 - 3


def csv_body(table: np.ndarray, newline: bytes = b"\n") -> bytes:
    return b"".join(b",".join(str(v).encode() for v in row) + newline for row in table)


def answer(
    handler: OnnxHandler,
    body: bytes,
    size: int,
    *,
    content_type: str = CSV,
    accept: str = CSV,
    placeholders: bool = False,
    spool: int = 1 << 20,
) -> bytes:
    context = InvocationContext(content_type=content_type, accept=accept)
    assert answers_in_chunks(handler, context)
    answerer = RecordChunks(handler, context, placeholders=placeholders, spool_bytes=spool)
    answers = answerer.answer(chunks_of(body, size))
    assert answers.media_type == accept
    answered = answers.body()
    if isinstance(answered, list):
        assert answers.length <= spool
        return b"".join(answered)
    assert answers.length > spool
    with answered:
        data = answered.read()
    assert len(data) == answers.length
    return data


def csv_table(body: bytes) -> np.ndarray:
    return np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float32)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("size", [7, 64, 1 << 20])
def test_one_output_line_per_input_line_in_order(
    handler: OnnxHandler, linear_model: Path, newline: bytes, size: int
) -> None:
    table = rows(500)
    body = csv_body(table, newline)[: -len(newline)]  # the last line may lack its break
    answered = answer(handler, body, size)
    assert answered.count(b"\n") == 500
    expected = run_onnxruntime(linear_model, {"x": table})["y"]
    np.testing.assert_allclose(csv_table(answered), expected, rtol=1e-6)


@pytest.mark.parametrize("spool", [0, 100, 1 << 30])
def test_a_large_answer_waits_in_a_file(handler: OnnxHandler, spool: int) -> None:
    body = csv_body(rows(300))
    in_memory = answer(handler, body, 50)
    assert answer(handler, body, 50, spool=spool) == in_memory


def test_json_lines_in_and_out(handler: OnnxHandler, linear_model: Path) -> None:
    table = rows(300)
    body = b"".join(orjson.dumps({"features": row.tolist()}) + b"\n" for row in table)
    answered = answer(handler, body, 100, content_type=JSONL, accept=JSONL)
    lines = answered.splitlines()
    assert len(lines) == 300
    expected = run_onnxruntime(linear_model, {"x": table})["y"]
    got = np.array([orjson.loads(line)["predictions"] for line in lines], np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def bad_line(body: bytes, number: int, text: bytes) -> bytes:
    lines = body.split(b"\n")
    lines[number - 1] = text
    return b"\n".join(lines)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"1,2,x,4", "column 3: 'x' is not a number"),
        (b"", "is empty"),
        (b"1,2,3", "input 'x' expects shape \\[N, 4\\], got \\[1, 3\\]"),
    ],
)
@pytest.mark.parametrize("size", [50, 1 << 20])
def test_a_bad_record_fails_the_request_naming_its_line_in_the_whole_body(
    handler: OnnxHandler, text: bytes, reason: str, size: int
) -> None:
    body = bad_line(csv_body(rows(400)), 321, text)
    with pytest.raises(RecordError, match=f"^text/csv line 321: {reason}"):
        answer(handler, body, size)


def test_a_record_the_model_refuses_is_found_by_halving(handler: OnnxHandler) -> None:
    body = b"".join(orjson.dumps(row.tolist()) + b"\n" for row in rows(64))
    body = bad_line(body, 50, b"[1, 2, 3]")
    with pytest.raises(
        RecordError, match=r"^application/jsonlines line 50: .*dimension 1 must be 4"
    ):
        answer(handler, body, 1 << 20, content_type=JSONL, accept=CSV)


@pytest.mark.parametrize("size", [30, 1 << 20])
def test_placeholders_keep_the_other_lines_in_place(
    handler: OnnxHandler, linear_model: Path, size: int
) -> None:
    table = rows(120)
    body = csv_body(table)
    for number, text in [(1, b"nope"), (60, b""), (61, b"1,2"), (120, b"1,2,3,4,5")]:
        body = bad_line(body, number, text)
    answered = answer(handler, body, size, placeholders=True)
    lines = answered.split(b"\n")[:-1]
    assert len(lines) == 120
    good = [i for i in range(120) if i not in (0, 59, 60, 119)]
    assert all(lines[i] == b"" for i in (0, 59, 60, 119))
    expected = run_onnxruntime(linear_model, {"x": table[good]})["y"]
    np.testing.assert_allclose(csv_table(b"\n".join(lines[i] for i in good)), expected, rtol=1e-6)


def test_json_lines_placeholders_say_what_was_wrong(handler: OnnxHandler) -> None:
    body = b"[1, 2, 3, 4]\n{oops\n[5, 6, 7, 8]\n"
    answered = answer(handler, body, 1 << 20, content_type=JSONL, accept=JSONL, placeholders=True)
    lines = [orjson.loads(line) for line in answered.splitlines()]
    assert "predictions" in lines[0]
    assert "predictions" in lines[2]
    assert "not valid JSON" in lines[1]["error"]


def test_without_a_placeholder_line_a_bad_record_still_fails(handler: OnnxHandler) -> None:
    # .npy cannot hold a placeholder: the request fails as without placeholders
    context = InvocationContext(content_type=CSV, accept="application/x-npy")
    assert not answers_in_chunks(handler, context)
    body = bad_line(csv_body(rows(10)), 4, b"x")
    with pytest.raises(InvalidInput, match="line 4"):
        handler.invoke(body, context)


def test_handlers_opt_in(linear_model: Path) -> None:
    handler = OnnxHandler(HandlerConfig(model_dir=linear_model.parent))
    context = InvocationContext(content_type=CSV, accept=CSV)
    assert not answers_in_chunks(handler, context)  # not loaded: not known to be row-wise
    handler.load()
    assert answers_in_chunks(handler, context)
    assert not answers_in_chunks(handler, InvocationContext(CSV, "application/json"))
    assert not answers_in_chunks(handler, InvocationContext("application/json", CSV))


def test_many_bad_records_in_one_chunk(handler: OnnxHandler) -> None:
    """Each bad record must not cost a level of recursion (Python's limit is 1,000)."""
    body = b"1,2,3,4\n\n" * 3000
    answered = answer(handler, body, 1 << 20, placeholders=True)
    lines = answered.split(b"\n")[:-1]
    assert len(lines) == 6000
    assert all(lines[i] for i in range(0, 6000, 2))
    assert not any(lines[i] for i in range(1, 6000, 2))


def test_a_long_line_is_read_in_linear_time() -> None:
    line = b"1," * 10_000_000 + b"1\n"  # 20 MB, read 1 KB at a time
    started = time.perf_counter()
    assert list(chunks_of(line + b"2\n", 1024)) == [line + b"2\n"]
    # Linear: well under a second here. Joining as it reads (quadratic) took 23 s.
    assert time.perf_counter() - started < 3


def test_answers_stay_in_memory_without_a_temporary_directory(
    handler: OnnxHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/read-only")
    body = csv_body(rows(300))
    context = InvocationContext(content_type=CSV, accept=CSV)
    answers = RecordChunks(handler, context, spool_bytes=100).answer(chunks_of(body, 50))
    assert answers.file is None
    assert b"".join(answers.parts) == answer(handler, body, 50)


def test_lines_end_with_a_line_feed_or_a_carriage_return_and_line_feed() -> None:
    assert split_lines(b"a\r\nb\nc") == [b"a", b"b", b"c"]
    assert split_lines(b"a\r\n\r\n") == [b"a", b""]
    assert count_lines(b"a\r\n\r\n") == 2
