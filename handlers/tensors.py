"""The data that flows between codecs and handlers."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from .errors import DecodesTooLarge, InvalidInput

Array: TypeAlias = npt.NDArray[Any]

#: What a decoder produces: one unnamed array (for a model with one input) or arrays by
#: input name.
Inputs: TypeAlias = Array | dict[str, Array]

#: What a handler returns: arrays by output name, in the model's output order.
Outputs: TypeAlias = dict[str, Array]

#: Default for the most bytes the arrays of one body may expand to once decoded: compressed
#: ``.npz`` members, or a RecordIO sparse tensor's claimed shape, could otherwise take far more
#: memory than the body limit suggests. The server sets it (``SERVING_MAX_DECODED_MB``).
MAX_EXPANDED_BYTES = 1 << 30

#: Default for the most rows (length of the first dimension) one body's inputs may have: a
#: few bytes can stand for many rows (an empty JSON array, a compressed ``.npz``), and every
#: row costs the model run and the answer. The server sets it (``SERVING_MAX_ROWS``).
MAX_ROWS = MAX_EXPANDED_BYTES // 16

#: numpy kinds a request may carry: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = frozenset("biuf")


def too_many_rows(rows: str, max_rows: int) -> DecodesTooLarge:
    """``rows`` says how many there are (``"6,200,000 rows"``, ``"more than 1,000 records"``)."""
    return DecodesTooLarge(
        f"the request decodes to {rows}, more than the {max_rows:,} allowed (SERVING_MAX_ROWS); "
        "send fewer rows per request"
    )


def check_rows(rows: int, max_rows: int) -> None:
    if rows > max_rows:
        raise too_many_rows(f"{rows:,} rows", max_rows)


def check_decoded(inputs: Inputs, max_bytes: int, max_rows: int) -> None:
    """Refuse decoded ``inputs`` of more rows (the longest first dimension) or bytes than
    allowed."""
    rows = size = 0
    for array in inputs.values() if isinstance(inputs, dict) else (inputs,):
        rows = max(rows, array.shape[0] if array.ndim else 1)
        size += array.nbytes
    check_rows(rows, max_rows)
    if size > max_bytes:
        raise DecodesTooLarge(
            f"the request decodes to {size:,} bytes of arrays, more than the {max_bytes:,} "
            "allowed (SERVING_MAX_DECODED_MB)"
        )


def describe(array: Array) -> str:
    """``float32 [2, 4]``: how messages show an array to the client."""
    return f"{array.dtype} {list(array.shape)}"


def is_numeric(array: Array) -> bool:
    return array.dtype.kind in NUMERIC_KINDS


def as_numeric_array(data: Any, what: str) -> Array:
    """Turn decoded JSON (nested lists) into an array, refusing ragged or non-numeric data.

    ``what`` names the data in error messages (``"instances"``, ``"input 'x'"``).
    """
    try:
        array = np.asarray(data)
    except ValueError as exc:  # numpy refuses inhomogeneous nesting
        raise InvalidInput(f"{what}: nested lists are ragged (rows of different lengths)") from exc
    if not is_numeric(array):
        raise InvalidInput(f"{what}: expected numbers or booleans, got {_kind_name(array)}")
    return array


def _kind_name(array: Array) -> str:
    return {"U": "strings", "S": "strings", "O": "null or mixed values"}.get(
        array.dtype.kind, str(array.dtype)
    )
