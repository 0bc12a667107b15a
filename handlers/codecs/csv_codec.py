"""``text/csv``: one record a line, no header, numbers only.

Requests decode to one ``float64`` array of shape ``[records, columns]`` (the handler casts
it to the model's dtype, refusing fractions for integer inputs). Lines may end with ``\\n``
or ``\\r\\n``; an empty line is a bad record, since every input line gets one output line.
Responses hold one line per record: each output flattened per record, the outputs side by
side in model order; floats in their shortest round-trip form, booleans as ``1``/``0``.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InvalidInput, RecordError
from ..tensors import MAX_ROWS, Array, Inputs, Outputs, check_rows
from .json_codecs import record_count, strip_bom
from .json_text import row_parts, writes_itself
from .lines import EMPTY_LINE, count_lines, split_lines


class CsvCodec:
    media_type = "text/csv"
    #: At worst (a column of integers) 50 MB/s; 12 million values a second written (float16,
    #: which orjson cannot write, 2 million).
    decode_bytes_per_second = 50e6
    encode_values_per_second = 12e6

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows

    def decode(self, body: bytes) -> Inputs:
        body = strip_bom(body)
        if not body:
            raise InvalidInput("text/csv body has no records")
        check_rows(count_lines(body), self.max_rows)  # a line a row: counted before parsing
        if not body.strip():  # numpy would only warn, with no data
            raise _diagnose(body)
        try:
            table = np.loadtxt(
                io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2, comments=None
            )
        except ValueError as exc:
            raise _diagnose(body) from exc
        if table.shape[0] != count_lines(body):  # numpy skips empty lines; we may not
            raise _diagnose(body)
        return table

    def placeholder(self, message: str) -> bytes:
        """The line written for a bad record when placeholders are asked for: an empty one."""
        return b"\n"

    def encode(self, outputs: Outputs) -> bytes:
        count = record_count(outputs, self.media_type)
        if count == 0:
            return b""
        columns = [_row_texts(array.reshape(count, -1)) for array in outputs.values()]
        lines = columns[0] if len(columns) == 1 else map(b",".join, zip(*columns, strict=True))
        return b"\n".join(lines) + b"\n"


def _row_texts(table: Array) -> list[bytes]:
    """Each row of a 2-D array as comma-separated numbers."""
    if table.dtype == np.bool_:
        table = table.view(np.uint8)
    table = np.ascontiguousarray(table)
    if writes_itself(table) and (table.dtype.kind != "f" or np.isfinite(table).all()):
        # A quarter of the time numpy's string cast takes; orjson writes NaN and Inf as null.
        return [row for part in row_parts(table) for row in part[1:-1].split(b"],[")]
    # numpy's cast also gives the shortest round-trip text, and "nan", "inf", float16
    return [",".join(row).encode() for row in table.astype(str).tolist()]


def _diagnose(body: bytes) -> InvalidInput:
    """Find the first bad line for the client; only runs once numpy has refused the body."""
    width = None
    for number, line in enumerate(split_lines(body), start=1):
        if not line.strip():
            return RecordError(CsvCodec.media_type, number, EMPTY_LINE)
        fields = line.split(b",")
        for column, field in enumerate(fields, start=1):
            try:
                float(field)
            except ValueError:
                value = field.strip()[:40].decode("utf-8", "replace")
                reason = f"column {column}: {value!r} is not a number"
                return RecordError(CsvCodec.media_type, number, reason)
        if width is None:
            width = len(fields)
        elif len(fields) != width:
            # Not a RecordError: which of the two lines is wrong is the model's to say.
            return InvalidInput(
                f"text/csv lines differ in length: line 1 has {width} values, "
                f"line {number} has {len(fields)}"
            )
    return InvalidInput("text/csv body could not be read as numbers")
