"""JSON text of answers, large arrays written a part at a time.

orjson holds the GIL for the whole of one call, and answers are written on a worker's
inference threads while its event loop waits for the GIL to answer ``/ping`` and read other
requests. One call for a 94,000-row answer held it for 5-8 ms, and the loop waited that long;
written in parts of :data:`PART_VALUES` numbers each, the GIL changes hands between parts (the
worker's switch interval is 1 ms). The text is byte for byte what one call writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

#: Most numbers one orjson call writes: about 0.5 ms of GIL at orjson's pace.
PART_VALUES = 16384

#: The dtypes orjson writes itself from a C-contiguous array, each number in its shortest
#: round-trip form for its own precision ("0.1" for float32, not "0.10000000149011612").
ORJSON_DTYPES = frozenset(
    np.dtype(kind + str(bits)) for kind in ("int", "uint") for bits in (8, 16, 32, 64)
) | {np.dtype(np.float32), np.dtype(np.float64)}

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def writes_itself(array: np.ndarray[Any, Any]) -> bool:
    """Whether orjson writes ``array`` from its buffer (not through ``default``)."""
    return array.dtype in ORJSON_DTYPES and array.flags.c_contiguous


def dumps(document: Any, default: Callable[[Any], Any]) -> bytes:
    """``orjson.dumps(document, default=default, option=OPT_SERIALIZE_NUMPY)``, with large
    arrays (directly or in objects within ``document``) written in parts."""
    if not _in_parts(document):
        return orjson.dumps(document, default=default, option=_OPTIONS)
    if isinstance(document, np.ndarray):
        return b"[" + b",".join(row_parts(document)) + b"]"
    members = [orjson.dumps(key) + b":" + dumps(value, default) for key, value in document.items()]
    return b"{" + b",".join(members) + b"}"


def _in_parts(value: Any) -> bool:
    """Whether ``value`` is, or is an object holding, an array to write in parts."""
    if isinstance(value, np.ndarray):
        return value.size > PART_VALUES and value.ndim > 0 and writes_itself(value)
    if isinstance(value, dict):
        return all(isinstance(key, str) for key in value) and any(map(_in_parts, value.values()))
    return False


def row_parts(array: np.ndarray[Any, Any]) -> list[bytes]:
    """The JSON text of ``array``'s rows (first-axis items), comma-separated, in parts of at
    most :data:`PART_VALUES` numbers (or one row), without the enclosing brackets. ``array``
    must be one that orjson :func:`writes itself <writes_itself>`."""
    rows = max(1, PART_VALUES // max(1, array[0].size)) if len(array) else 1
    return [
        orjson.dumps(array[start : start + rows], option=_OPTIONS)[1:-1]
        for start in range(0, len(array), rows)
    ]
