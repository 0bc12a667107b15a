"""``application/json`` and ``application/jsonlines``.

Request forms (a JSON body; in JSON Lines each line is one record in the same forms):

* a bare (nested) array: the model's one input, as is;
* ``{"instances": [...]}``, each instance an array, ``{"features": [...]}``,
  ``{"data": {"features": {"values": [...]}}}`` (SageMaker's built-in forms) or an object of
  named inputs for one row; instances are stacked along a new first (batch) axis;
* ``{"inputs": {"name": array, ...}}`` for named inputs, or ``{"inputs": array}``;
* a response of ours, ``{"predictions": array}`` or ``{"outputs": {"name": array, ...}}``, so
  that two containers chain in an inference pipeline with JSON between them.

Responses: ``{"predictions": ...}`` for a model with one output, ``{"outputs": {"name": ...}}``
for several; JSON Lines writes one such object per record (row of the first axis).

Non-finite numbers: requests must be strict JSON (RFC 8259), so ``NaN`` and ``Infinity``
literals are refused as malformed; non-finite outputs are written as ``null``, which every
JSON parser reads. Use ``application/x-npy`` to get them exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ..errors import InvalidInput, NotAcceptable, RecordError
from ..tensors import Array, Inputs, Outputs, as_numeric_array
from . import json_text
from .lines import EMPTY_LINE, split_lines

Record = Any  # one row of the model's one input, or a dict of rows by input name


def strip_bom(body: bytes) -> bytes:
    """``body`` without a leading UTF-8 byte order mark (some Windows tools write one)."""
    return body[3:] if body.startswith(b"\xef\xbb\xbf") else body


def _loads(text: bytes, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{where}is not valid JSON: {exc}") from exc


def _dumps(document: Any) -> bytes:
    return json_text.dumps(document, _to_builtin)


def _to_builtin(value: Any) -> Any:
    # orjson serializes C-contiguous arrays of common dtypes itself; the rest lands here.
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _instance_record(instance: Any, where: str) -> Record:
    if not isinstance(instance, dict):
        return instance
    if "features" in instance:
        return instance["features"]
    if "data" in instance:
        try:
            return instance["data"]["features"]["values"]
        except (KeyError, TypeError) as exc:
            raise InvalidInput(
                f'{where}"data" must be {{"features": {{"values": [...]}}}}'
            ) from exc
    return instance


def _assemble(records: list[Record], what: str) -> Inputs:
    """Stack records along a new batch axis: one array, or one array per input name."""
    if not records:
        raise InvalidInput(f"{what}: no records")
    named = [isinstance(record, dict) for record in records]
    if not any(named):
        return as_numeric_array(records, what)
    if not all(named):
        raise InvalidInput(f"{what}: mixes arrays and objects of named inputs")
    names = list(records[0])
    for index, record in enumerate(records):
        if set(record) != set(names):
            raise InvalidInput(
                f"{what}: record {index} has inputs {sorted(record)}, record 0 has {sorted(names)}"
            )
    return {
        name: as_numeric_array([record[name] for record in records], f"input {name!r}")
        for name in names
    }


def _named_inputs(inputs: dict[str, Any]) -> dict[str, Array]:
    if not inputs:
        raise InvalidInput('"inputs" is empty')
    return {name: as_numeric_array(value, f"input {name!r}") for name, value in inputs.items()}


#: Keys of our responses, read as "inputs" when alone in an object, so that a container's JSON
#: answer is the next container's request in an inference pipeline.
_RESPONSE_KEYS = frozenset({"predictions", "outputs"})


def _inputs_key(document: dict[str, Any]) -> str | None:
    """The key holding a request's inputs: "inputs", or a response's key when it is alone."""
    if "inputs" in document:
        return "inputs"
    if len(document) == 1 and next(iter(document)) in _RESPONSE_KEYS:
        return next(iter(document))
    return None


def decode_document(document: Any) -> Inputs:
    """Decode one parsed JSON request body (see the module docstring for the forms)."""
    if isinstance(document, list):
        return as_numeric_array(document, "body")
    if isinstance(document, dict):
        if "instances" in document:
            instances = document["instances"]
            if not isinstance(instances, list):
                raise InvalidInput('"instances" must be an array')
            return _assemble(
                [_instance_record(item, f"instance {i}: ") for i, item in enumerate(instances)],
                "instances",
            )
        key = _inputs_key(document)
        if key is not None:  # {"inputs": ...}, or our own response, read back in a pipeline
            inputs = document[key]
            if isinstance(inputs, dict):
                return _named_inputs(inputs)
            return as_numeric_array(inputs, '"inputs"')
    raise InvalidInput(
        'expected a JSON array, {"instances": [...]} or {"inputs": {"name": [...]}}, '
        f"got {_shape_of(document)}"
    )


def _shape_of(document: Any) -> str:
    if isinstance(document, dict):
        keys = ", ".join(repr(key) for key in list(document)[:5])
        return f"an object with keys {keys}" if keys else "an empty object"
    return f"a JSON {type(document).__name__}"


def _response(outputs: Outputs) -> dict[str, Any]:
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    return {"outputs": outputs}


class JsonCodec:
    media_type = "application/json"
    #: At worst (a column of integers) 30 MB/s, and 25 million values a second written.
    decode_bytes_per_second = 30e6
    encode_values_per_second = 25e6

    def decode(self, body: bytes) -> Inputs:
        return decode_document(_loads(strip_bom(body), "body "))

    def encode(self, outputs: Outputs) -> bytes:
        return _dumps(_response(outputs))


class JsonLinesCodec:
    """One record a line, ``\\n`` or ``\\r\\n`` ending it; an empty line is a bad record
    (every input line gets one output line). A line of ``{"instances": [...]}`` holds as many
    records as instances."""

    media_type = "application/jsonlines"
    #: At worst (a number a line) 30 MB/s; answers are written line by line in Python, a
    #: line in 2.5 µs: 0.4 million values a second for rows of one value.
    decode_bytes_per_second = 30e6
    encode_values_per_second = 0.4e6

    def decode(self, body: bytes) -> Inputs:
        body = strip_bom(body)
        if not body:
            raise InvalidInput("application/jsonlines body has no records")
        records: list[Record] = []
        for number, line in enumerate(split_lines(body), start=1):
            if not line.strip():
                raise RecordError(self.media_type, number, EMPTY_LINE)
            try:
                records.extend(_line_records(_loads(line, "")))
            except InvalidInput as exc:
                raise RecordError(self.media_type, number, exc.message) from exc
        return _assemble(records, "JSON Lines")

    def placeholder(self, message: str) -> bytes:
        """The line written for a bad record when placeholders are asked for."""
        return _dumps({"error": message}) + b"\n"

    def encode(self, outputs: Outputs) -> bytes:
        count = record_count(outputs, self.media_type)
        lines = [
            _dumps(_response({name: array[row] for name, array in outputs.items()}))
            for row in range(count)
        ]
        return b"\n".join(lines) + b"\n" if lines else b""


def _line_records(document: Any) -> list[Record]:
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidInput('"instances" must be an array')
        return [_instance_record(item, "") for item in instances]
    if isinstance(document, dict) and (key := _inputs_key(document)) is not None:
        return [document[key]]  # one record: named values, or an array
    return [_instance_record(document, "")]


def record_count(outputs: Outputs, media_type: str) -> int:
    """The number of records (rows of the first axis) shared by every output.

    Record-per-line formats need it; a scalar output or outputs of different lengths cannot
    be written one record a line, which is the client's choice of format to change.
    """
    counts = {name: array.shape[0] if array.ndim else None for name, array in outputs.items()}
    if None in counts.values() or len(set(counts.values())) > 1:
        shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in outputs.items())
        raise NotAcceptable(
            f"{media_type} writes one line per record, but the outputs do not share a first "
            f"(record) axis: {shapes}; ask for application/json instead"
        )
    return next(iter(counts.values())) or 0
