"""Every codec in and out against the real server, numbers compared with onnxruntime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from handlers.codecs import default_codecs
from tests.recordio_wire import FLOAT32, FLOAT64, INT32, body, record, tensor
from tests.server import ServerProcess
from tests.wire import (
    Array,
    assert_same_outputs,
    decode_response,
    npy_bytes,
    npz_bytes,
    run_onnxruntime,
)

RNG = np.random.default_rng(7)
X = RNG.normal(size=(5, 4)).astype(np.float32)

LINEAR_REQUESTS: dict[str, tuple[str, Callable[[Array], bytes]]] = {
    "json bare array": ("application/json", lambda x: json.dumps(x.tolist()).encode()),
    "json instances": (
        "application/json",
        lambda x: json.dumps({"instances": x.tolist()}).encode(),
    ),
    "json instances features": (
        "application/json",
        lambda x: json.dumps({"instances": [{"features": row} for row in x.tolist()]}).encode(),
    ),
    "json instances data": (
        "application/json",
        lambda x: json.dumps(
            {"instances": [{"data": {"features": {"values": row}}} for row in x.tolist()]}
        ).encode(),
    ),
    "json named inputs": (
        "application/json",
        lambda x: json.dumps({"inputs": {"x": x.tolist()}}).encode(),
    ),
    "json charset": ("application/json; charset=utf-8", lambda x: json.dumps(x.tolist()).encode()),
    "jsonlines arrays": (
        "application/jsonlines",
        lambda x: "".join(json.dumps(row) + "\n" for row in x.tolist()).encode(),
    ),
    "jsonlines features crlf": (
        "application/jsonlines",
        lambda x: "\r\n".join(json.dumps({"features": row}) for row in x.tolist()).encode(),
    ),
    "csv": (
        "text/csv",
        lambda x: "".join(",".join(map(repr, row)) + "\n" for row in x.tolist()).encode(),
    ),
    "csv crlf no final newline": (
        "text/csv; charset=utf-8",
        lambda x: "\r\n".join(",".join(map(repr, row)) for row in x.tolist()).encode(),
    ),
    "npy": ("application/x-npy", npy_bytes),
    "npy float64": ("application/x-npy", lambda x: npy_bytes(x.astype(np.float64))),
    "npy fortran order": ("application/x-npy", lambda x: npy_bytes(np.asfortranarray(x))),
    "npz": ("application/x-npz", lambda x: npz_bytes({"x": x})),
    "recordio": (
        "application/x-recordio-protobuf",
        lambda x: body(*(record({"values": tensor(FLOAT32, row)}) for row in x.tolist())),
    ),
    "recordio float64 with shape": (
        "application/x-recordio-protobuf",
        lambda x: body(
            *(record({"values": tensor(FLOAT64, row, shape=[4])}) for row in x.tolist())
        ),
    ),
    "recordio sparse": (
        "application/x-recordio-protobuf",
        lambda x: body(
            *(
                record({"values": tensor(FLOAT32, row, keys=[0, 1, 2, 3], shape=[4])})
                for row in x.tolist()
            )
        ),
    ),
}

#: Formats that write booleans as numbers (CSV writes every number alike).
WITHOUT_BOOLEANS = ("text/csv", "application/x-recordio-protobuf")

#: Every built-in response type (tests/test_codecs.py lists them by name).
RESPONSE_TYPES = default_codecs().encodable


@pytest.mark.parametrize("accept", RESPONSE_TYPES)
@pytest.mark.parametrize("request_form", LINEAR_REQUESTS)
def test_single_input_model(
    linear_server: ServerProcess, linear_model: Path, request_form: str, accept: str
) -> None:
    content_type, encode = LINEAR_REQUESTS[request_form]
    expected = run_onnxruntime(linear_model, {"x": X})
    response = linear_server.post(
        "/invocations", encode(X), {"Content-Type": content_type, "Accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == accept
    got = decode_response(accept, response.content, expected)
    assert_same_outputs(got, expected, same_kind=accept not in WITHOUT_BOOLEANS)


A = RNG.normal(size=(3, 3)).astype(np.float32)
B = RNG.integers(-50, 50, size=(3, 3)).astype(np.int64)
C = np.array([True, False, True])
MIXED_FEEDS: dict[str, Array] = {"a": A, "b": B, "c": C}


def _named_rows() -> list[dict[str, object]]:
    return [{"a": A[i].tolist(), "b": B[i].tolist(), "c": bool(C[i])} for i in range(len(C))]


MIXED_REQUESTS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "json named inputs": (
        "application/json",
        lambda: json.dumps({"inputs": {k: v.tolist() for k, v in MIXED_FEEDS.items()}}).encode(),
    ),
    "json instances of named rows": (
        "application/json",
        lambda: json.dumps({"instances": _named_rows()}).encode(),
    ),
    "jsonlines named records": (
        "application/jsonlines",
        lambda: "".join(json.dumps({"inputs": row}) + "\n" for row in _named_rows()).encode(),
    ),
    "npz": ("application/x-npz", lambda: npz_bytes(MIXED_FEEDS)),
    "recordio named features": (
        "application/x-recordio-protobuf",
        lambda: body(
            *(
                record(
                    {
                        "a": tensor(FLOAT32, A[i].tolist()),
                        "b": tensor(INT32, B[i].tolist()),
                        "c": tensor(INT32, [int(C[i])], shape=[]),
                    }
                )
                for i in range(len(C))
            )
        ),
    ),
    "npz other dtypes": (
        "application/x-npz",
        lambda: npz_bytes({"a": A.astype(np.float64), "b": B.astype(np.int32), "c": C}),
    ),
}


@pytest.mark.parametrize("accept", [t for t in RESPONSE_TYPES if t != "application/x-npy"])
@pytest.mark.parametrize("request_form", MIXED_REQUESTS)
def test_several_inputs_and_outputs(
    mixed_server: ServerProcess, mixed_model: Path, request_form: str, accept: str
) -> None:
    content_type, encode = MIXED_REQUESTS[request_form]
    expected = run_onnxruntime(mixed_model, MIXED_FEEDS)
    response = mixed_server.post(
        "/invocations", encode(), {"Content-Type": content_type, "Accept": accept}
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == accept
    got = decode_response(accept, response.content, expected)
    assert_same_outputs(got, expected, same_kind=accept not in WITHOUT_BOOLEANS)


def test_npy_is_not_offered_for_several_outputs(mixed_server: ServerProcess) -> None:
    body = MIXED_REQUESTS["npz"][1]()
    headers = {"Content-Type": "application/x-npz", "Accept": "application/x-npy"}
    response = mixed_server.post("/invocations", body, headers)
    assert response.status_code == 406
    assert "application/x-npz" in response.json()["error"]
    assert "x-npy" not in response.json()["error"].split("available:")[1]
    headers["Accept"] = "application/x-npy, application/x-npz;q=0.5"
    assert mixed_server.post("/invocations", body, headers).headers["Content-Type"] == (
        "application/x-npz"
    )


def test_json_shapes(mixed_server: ServerProcess) -> None:
    """The documented response forms: predictions for one output, outputs by name for several."""
    body = MIXED_REQUESTS["json named inputs"][1]()
    response = mixed_server.post("/invocations", body, {"Content-Type": "application/json"})
    assert list(response.json()) == ["outputs"]
    assert list(response.json()["outputs"]) == ["total", "doubled", "negated"]
    negated = response.json()["outputs"]["negated"]
    assert negated == [False, True, False]
    assert all(isinstance(value, bool) for value in negated)
    assert all(isinstance(v, int) for row in response.json()["outputs"]["doubled"] for v in row)
