"""Independent request encoders and response decoders, the way a client would write them."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from tests.recordio_wire import read_response

Array = npt.NDArray[Any]


def run_onnxruntime(model: Path, feeds: Mapping[str, Array]) -> dict[str, Array]:
    """The model's outputs computed by onnxruntime directly: what every test compares to."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def npy_bytes(array: Array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npz_bytes(arrays: Mapping[str, Array]) -> bytes:
    buffer = io.BytesIO()
    named: dict[str, Any] = dict(arrays)
    np.savez(buffer, **named)
    return buffer.getvalue()


def decode_response(
    media_type: str, body: bytes, expected: Mapping[str, Array]
) -> dict[str, Array]:
    """Parse a response body into arrays by output name (``expected`` gives names/widths)."""
    names = list(expected)
    if media_type == "application/json":
        return _from_document(json.loads(body), names)
    if media_type == "application/jsonlines":
        rows = [_from_document(json.loads(line), names) for line in body.splitlines()]
        return {name: np.array([row[name] for row in rows]) for name in names}
    if media_type == "text/csv":
        table = np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)
        result, start = {}, 0
        for name, array in expected.items():
            width = int(np.prod(array.shape[1:]))
            result[name] = table[:, start : start + width].reshape(array.shape)
            start += width
        return result
    if media_type == "application/x-npy":
        return {names[0]: np.load(io.BytesIO(body), allow_pickle=False)}
    if media_type == "application/x-npz":
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    if media_type == "application/x-recordio-protobuf":
        records = read_response(body)
        return {
            name: np.array([record[name][1] for record in records]).reshape(array.shape)
            for name, array in expected.items()
        }
    raise AssertionError(f"unexpected media type {media_type}")


def _from_document(document: dict[str, Any], names: list[str]) -> dict[str, Array]:
    if "predictions" in document:
        assert len(names) == 1
        return {names[0]: np.array(document["predictions"])}
    return {name: np.array(value) for name, value in document["outputs"].items()}


def assert_same_outputs(
    got: Mapping[str, Array], expected: Mapping[str, Array], *, same_kind: bool = True
) -> None:
    """Every output present, of the same kind (bool, integer, float) unless the format cannot
    tell (CSV), with exactly onnxruntime's values once cast to its dtype."""
    assert list(got) == list(expected)
    for name, want in expected.items():
        array = np.asarray(got[name])
        if same_kind:
            assert array.dtype.kind.replace("u", "i") == want.dtype.kind.replace("u", "i"), name
        np.testing.assert_array_equal(array.astype(want.dtype), want, err_msg=name)
