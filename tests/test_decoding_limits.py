"""Decoding is bounded in memory and time: a compressed ``.npz`` member is inflated no further
than it declares, a body's decoded size and rows have caps (``SERVING_MAX_DECODED_MB``,
``SERVING_MAX_ROWS``), and large bodies are decoded (and large answers encoded) off the event
loop, so that ``/ping`` stays answered while they are."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from werkzeug.test import Client

from handlers import HandlerConfig, InvocationContext
from handlers.codecs import NpzCodec, RecordIOCodec
from handlers.errors import InvalidInput
from handlers.execution import InlineExecutor, T
from handlers.onnx_handler import OnnxHandler
from serving import Settings
from serving import app as serving_app
from serving.app import create_app, load_model
from tests.recordio_wire import FLOAT32, body, field, frame, record, tensor
from tests.server import running_server
from tests.wire import Array, npy_bytes, run_onnxruntime

MIB = 1024 * 1024
RNG = np.random.default_rng(15)
NPZ = "application/x-npz"
RECORDIO = "application/x-recordio-protobuf"


def npy_header(shape: tuple[int, ...]) -> bytes:
    return npy_bytes(np.zeros(shape, np.float32))[: -4 * int(np.prod(shape))]


def zip_member(content: bytes, zeros_mib: int, declared_size: int) -> bytes:
    """An ``.npz`` whose one member, ``x.npy``, holds ``content`` followed by ``zeros_mib`` MiB
    of zeros, deflated, with ``declared_size`` as its size in both the local header and the
    central directory (and the CRC of what it holds): a declared size smaller than that is
    what an attacker patches into an honest archive."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(content) + compressor.flush(zlib.Z_FULL_FLUSH)
    # A full flush resets the compressor, so each MiB of zeros compresses to the same block.
    zeros = bytes(MIB)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    data += block * zeros_mib + compressor.flush()
    crc = zlib.crc32(content)
    for _ in range(zeros_mib):
        crc = zlib.crc32(zeros, crc)
    name = b"x.npy"
    sizes = struct.pack("<III", crc, len(data), declared_size)
    local = b"PK\x03\x04" + struct.pack("<HHHHH", 20, 0, 8, 0, 0x21) + sizes
    local += struct.pack("<HH", len(name), 0) + name
    central = b"PK\x01\x02" + struct.pack("<HHHHHH", 20, 20, 0, 8, 0, 0x21) + sizes
    central += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0) + name
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local + data), 0)
    return local + data + central + end


def test_a_zip_bomb_is_inflated_no_further_than_its_member_declares() -> None:
    """Row 2 of issue 15: a member declaring 528 bytes that inflates to 256 MiB."""
    header = npy_header((100,))
    bomb = zip_member(header, zeros_mib=256, declared_size=len(header) + 400)
    assert len(bomb) < 300_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidInput, match=r"x\.npy' cannot be read: Bad CRC-32") as refused:
            NpzCodec().decode(bomb)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 400
    assert peak < 4 * MIB, f"{peak / MIB:.0f} MiB allocated"
    assert seconds < 0.2


def test_an_honest_member_past_the_decoded_size_cap_is_refused_unread() -> None:
    header = npy_header((64 * MIB,))
    body_bytes = zip_member(header, zeros_mib=256, declared_size=len(header) + 256 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="expands to 268,435,584 bytes") as refused:
            NpzCodec(max_expanded_bytes=96 * MIB).decode(body_bytes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert "more than the 100,663,296 allowed (SERVING_MAX_DECODED_MB)" in refused.value.message
    assert peak < 4 * MIB


def test_an_npz_of_too_many_rows_is_refused_before_it_is_inflated() -> None:
    """Row 3 (b): a small .npz, within the decoded-size cap, of millions of rows."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((6_200_000, 1), np.float32))
    assert len(buffer.getvalue()) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="6,200,000 rows") as refused:
            NpzCodec(max_rows=393_216).decode(buffer.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413
    assert peak < 4 * MIB  # the 25 MB array is never inflated


@pytest.mark.parametrize("uid", [b"", b"u"], ids=["records alike", "records of two lengths"])
def test_a_recordio_body_of_too_many_records_stops_at_the_cap(uid: bytes) -> None:
    alike = frame(record({"values": tensor(FLOAT32, [1, 2, 3, 4])}))
    other = frame(
        record({"values": tensor(FLOAT32, [5, 6, 7, 8])}, extra=field(3, uid) if uid else b"")
    )
    codec = RecordIOCodec(max_rows=1_000)
    with pytest.raises(
        InvalidInput, match=r"more than the 1,000 allowed \(SERVING_MAX_ROWS\)"
    ) as refused:
        codec.decode((alike + other) * 500 + alike)
    assert refused.value.status == 413
    decoded = codec.decode((alike + other) * 500)
    assert isinstance(decoded, np.ndarray)
    np.testing.assert_array_equal(decoded, [[1, 2, 3, 4], [5, 6, 7, 8]] * 500)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (96 * MIB, 393_216)),  # 16 x and a row per 16 bytes of the 6 MiB body limit
        ({"SAGEMAKER_BATCH": "true"}, (1600 * MIB, 6_553_600)),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, (1024 * MIB, 67_108_864)),
        ({"SERVING_MAX_DECODED_MB": "0.5", "SERVING_MAX_ROWS": "7"}, (MIB // 2, 7)),
    ],
)
def test_the_caps_come_from_the_settings_or_the_body_limit(
    environ: dict[str, str], expected: tuple[int, int]
) -> None:
    assert serving_app.decode_limits(Settings.from_sources(environ, cpus=1)) == expected


# The linear model's input as each codec sends it; rows = the cap, then one more.
def json_body(x: Array) -> bytes:
    return json.dumps({"instances": x.tolist()}).encode()


def csv_body(x: Array) -> bytes:
    return b"".join(b",".join(repr(float(v)).encode() for v in row) + b"\n" for row in x)


def jsonlines_body(x: Array) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in x.tolist())


def npz_body(x: Array) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x)
    return buffer.getvalue()


def recordio_body(x: Array) -> bytes:
    return body(*[record({"values": tensor(FLOAT32, row)}) for row in x.tolist()])


BODIES: dict[str, tuple[str, Callable[[Array], bytes]]] = {
    "json": ("application/json", json_body),
    "jsonlines": ("application/jsonlines", jsonlines_body),
    "csv": ("text/csv", csv_body),
    "npy": ("application/x-npy", npy_bytes),
    "npz": (NPZ, npz_body),
    "recordio": (RECORDIO, recordio_body),
}

CAP = 50


@pytest.fixture(scope="module")
def capped(linear_model: Path) -> Client:
    settings = Settings.from_sources(
        {"SERVING_MAX_ROWS": str(CAP)}, {"model_dir": str(linear_model.parent)}, cpus=1
    )
    app = create_app(settings)
    load_model(app)
    return Client(app)


@pytest.mark.parametrize("codec", BODIES)
def test_every_codec_is_held_to_the_row_cap(capped: Client, linear_model: Path, codec: str) -> None:
    media_type, encode = BODIES[codec]
    x = RNG.normal(size=(CAP + 1, 4)).astype(np.float32)
    headers = {"Content-Type": media_type, "Accept": "application/json"}
    refused = capped.post("/invocations", data=encode(x), headers=headers)
    assert refused.status_code == 413, refused.text
    assert refused.json is not None
    assert f"more than the {CAP} allowed (SERVING_MAX_ROWS)" in refused.json["error"]
    answered = capped.post("/invocations", data=encode(x[:CAP]), headers=headers)
    assert answered.status_code == 200, answered.text
    assert answered.json is not None
    expected = run_onnxruntime(linear_model, {"x": x[:CAP]})["y"]
    np.testing.assert_allclose(answered.json["predictions"], expected, rtol=1e-6, atol=1e-6)


def test_multi_record_bodies_are_held_to_the_cap_chunk_by_chunk(
    capped: Client, linear_model: Path
) -> None:
    """Batch transform's CSV in and out is answered in chunks: a chunk of more rows than the
    cap is answered in parts, not refused."""
    x = RNG.normal(size=(CAP * 5 + 3, 4)).astype(np.float32)
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    response = capped.post("/invocations", data=csv_body(x), headers=headers)
    assert response.status_code == 200, response.text
    got = np.loadtxt(io.BytesIO(response.data), delimiter=",", ndmin=2)
    expected = run_onnxruntime(linear_model, {"x": x})["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_the_decoded_size_cap_is_a_setting(linear_model: Path) -> None:
    settings = Settings.from_sources(
        {"SERVING_MAX_DECODED_MB": "1"}, {"model_dir": str(linear_model.parent)}, cpus=1
    )
    app = create_app(settings)
    load_model(app)
    x = np.zeros((70_000, 4), np.float32)  # 1.07 MiB decoded, a few KB sent
    response = Client(app).post("/invocations", data=npz_body(x), headers={"Content-Type": NPZ})
    assert response.status_code == 413, response.text
    assert response.json is not None
    assert "(SERVING_MAX_DECODED_MB)" in response.json["error"]


class CountingExecutor(InlineExecutor):
    """Runs everything inline, counting what was sent off the event loop with ``call``."""

    def __init__(self) -> None:
        self.calls = 0

    def call(self, function: Callable[..., T], *args: Any) -> T:
        self.calls += 1
        return function(*args)


@pytest.mark.parametrize(
    ("codec", "rows", "hops"),
    [
        ("json", 1, 0),  # a tiny body, and a tiny answer: no thread hop at all
        ("json", 3_000, 1),  # 250 KB of JSON in, 9,000 values out
        ("json", 10_000, 2),  # and 30,000 values out, more than a millisecond's work
        ("recordio", 400, 1),  # 16 KB of RecordIO, at 10 MB/s
        ("npy", 10_000, 1),  # read in place at any size: only the answer is sent off
    ],
)
def test_large_bodies_are_decoded_and_large_answers_encoded_off_the_loop(
    linear_model: Path, codec: str, rows: int, hops: int
) -> None:
    executor = CountingExecutor()
    handler = OnnxHandler(HandlerConfig(model_dir=linear_model.parent, executor=executor))
    handler.load()
    media_type, encode = BODIES[codec]
    x = RNG.normal(size=(rows, 4)).astype(np.float32)
    executor.calls = 0
    inputs = handler.decode(encode(x), media_type)
    context = InvocationContext(media_type, "application/json")
    handler.encode(handler.predict(inputs, context), context.accept)
    assert executor.calls == hops


def test_pings_stay_fast_while_large_recordio_bodies_are_decoded(
    linear_model: Path, model_root: Path
) -> None:
    """Row 3 (a): two clients send 6 MB RecordIO bodies while a third pings. The records are
    of two lengths, so the codec reads them one by one in Python: 0.5 s a body on one core
    of a 2024 laptop (records alike but for their values it reads at once, in 6 ms)."""
    rows = 145_000
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    two = [
        frame(record({"values": tensor(FLOAT32, x[0].tolist())})),
        frame(record({"values": tensor(FLOAT32, x[1].tolist())}, extra=field(3, b"u"))),
    ]
    request = b"".join(two[i % 2] for i in range(rows))
    assert len(request) < 6 * MIB
    expected = run_onnxruntime(linear_model, {"x": x})["y"][np.arange(rows) % 2]
    arguments = ["--model-dir", str(linear_model.parent)]
    pings: list[float] = []
    statuses: list[int] = []
    answers: list[requests.Response] = []
    with running_server(arguments, model_root / "decoding.log") as server:
        done = threading.Event()

        def send() -> None:
            with requests.Session() as session:
                for _ in range(2):
                    answers.append(
                        session.post(
                            server.url("/invocations"),
                            data=request,
                            headers={"Content-Type": RECORDIO, "Accept": "application/x-npy"},
                            timeout=60,
                        )
                    )

        def ping() -> None:
            with requests.Session() as session:
                while not done.is_set():
                    started = time.perf_counter()
                    status = session.get(server.url("/ping"), timeout=10).status_code
                    pings.append(time.perf_counter() - started)
                    statuses.append(status)
                    time.sleep(0.01)

        senders = [threading.Thread(target=send) for _ in range(2)]
        pinger = threading.Thread(target=ping)
        pinger.start()
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        done.set()
        pinger.join()
    assert [answer.status_code for answer in answers] == [200] * 4
    for answer in answers:
        got = np.load(io.BytesIO(answer.content), allow_pickle=False)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    latencies = np.array(pings)
    assert statuses == [200] * len(pings)
    p99, worst = np.percentile(latencies, 99) * 1e3, latencies.max() * 1e3
    print(f"/ping while decoding: {len(pings)} pings, p99 {p99:.1f} ms, max {worst:.1f} ms")
    assert worst < 300, f"/ping p99 {p99:.0f} ms, max {worst:.0f} ms"
