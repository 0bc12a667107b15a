"""Answers with large arrays are written in parts (so the GIL changes hands between them),
byte for byte as one orjson call writes them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from handlers.codecs import json_text
from handlers.codecs.csv_codec import CsvCodec
from handlers.codecs.json_codecs import JsonCodec

RNG = np.random.default_rng(7)
LARGE = json_text.PART_VALUES * 3 + 5


def one_call(document: Any) -> bytes:
    return orjson.dumps(document, default=lambda v: v.tolist(), option=orjson.OPT_SERIALIZE_NUMPY)


ARRAYS: dict[str, np.ndarray[Any, Any]] = {
    "float32 column": RNG.random((LARGE, 1), dtype=np.float32),
    "float32 with NaN and Inf": np.array([np.nan, np.inf, -np.inf, 0.1] * LARGE, np.float32),
    "float64 rows": RNG.random((LARGE // 7, 7)),
    "int64 3-D": RNG.integers(-(2**40), 2**40, (LARGE // 12, 3, 4)),
    "uint8 flat": RNG.integers(0, 255, LARGE, dtype=np.uint8),
    "rows wider than a part": RNG.random((3, json_text.PART_VALUES + 1), dtype=np.float32),
    "not contiguous": RNG.random((LARGE, 2), dtype=np.float32)[:, ::2],
    "bool": RNG.random(LARGE) > 0.5,
    "small": np.arange(4, dtype=np.float32),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_written_as_one_orjson_call_writes_it(name: str) -> None:
    array = ARRAYS[name]
    for document in (array, {"predictions": array}, {"outputs": {"a": array, "b": array[:2]}}):
        assert json_text.dumps(document, lambda v: v.tolist()) == one_call(document)


def test_large_arrays_are_written_in_parts_of_at_most_part_values() -> None:
    array = ARRAYS["float64 rows"]
    parts = json_text.row_parts(array)
    assert len(parts) > 1
    counts = [len(orjson.loads(b"[" + part + b"]")) * array.shape[1] for part in parts]
    assert max(counts) <= json_text.PART_VALUES
    assert sum(counts) == array.size


def test_codecs_answer_as_before() -> None:
    array = ARRAYS["float64 rows"]
    assert JsonCodec().encode({"y": array}) == one_call({"predictions": array})
    csv_lines = CsvCodec().encode({"y": array}).decode().splitlines()
    np.testing.assert_array_equal(np.array([line.split(",") for line in csv_lines], float), array)
