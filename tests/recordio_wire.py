"""application/x-recordio-protobuf written and read by hand: the RecordIO framing and the
protobuf wire format of ``aialgs.data.Record`` with struct and varints, no protobuf package,
so that tests check the codec's schema and framing, not only that it agrees with itself.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

MAGIC = 0xCED7230A
# Value's oneof field numbers
FLOAT32, FLOAT64, INT32, BYTES = 2, 3, 7, 9
FEATURES, LABEL = 1, 2  # Record's map fields
PACK = {FLOAT32: "f", FLOAT64: "d"}


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1  # negative int32 values take ten bytes, as in protobuf
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def packed(kind: int, values: Sequence[float]) -> bytes:
    if kind in PACK:
        return struct.pack(f"<{len(values)}{PACK[kind]}", *values)
    return b"".join(varint(int(value)) for value in values)


def tensor(
    kind: int, values: Sequence[float], keys: Sequence[int] = (), shape: Sequence[int] = ()
) -> bytes:
    """A Value holding a tensor (empty repeated fields are left out, as protobuf does)."""
    body = field(1, packed(kind, values)) if values else b""
    body += field(2, packed(INT32, keys)) if keys else b""
    body += field(3, packed(INT32, shape)) if shape else b""
    return field(kind, body)


def record(entries: Mapping[str, bytes], map_field: int = FEATURES, extra: bytes = b"") -> bytes:
    """A Record whose ``map_field`` maps each name to a Value."""
    return (
        b"".join(
            field(map_field, field(1, name.encode()) + field(2, value))
            for name, value in entries.items()
        )
        + extra
    )


def frame(payload: bytes, padding: bool = True) -> bytes:
    pad = b"\0" * (-len(payload) % 4) if padding else b""
    return struct.pack("<II", MAGIC, len(payload)) + payload + pad


def body(*records: bytes) -> bytes:
    return b"".join(frame(payload) for payload in records)


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    number = shift = 0
    while True:
        byte = data[offset]
        number |= (byte & 0x7F) << shift
        offset += 1
        shift += 7
        if byte < 0x80:
            return number, offset


def read_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The (number, payload) of each field; a response holds length-delimited fields only."""
    fields = []
    offset = 0
    while offset < len(data):
        key, offset = read_varint(data, offset)
        assert key & 7 == 2, f"field {key >> 3} has wire type {key & 7}"
        length, offset = read_varint(data, offset)
        fields.append((key >> 3, data[offset : offset + length]))
        offset += length
    assert offset == len(data)
    return fields


def read_varints(data: bytes) -> list[int]:
    numbers = []
    offset = 0
    while offset < len(data):
        number, offset = read_varint(data, offset)
        numbers.append(number)
    return numbers


Label = tuple[int, list[Any], list[int]]  # tensor kind, values, shape


def read_response(response: bytes) -> list[dict[str, Label]]:
    """Each record's label map, read the way a client without protobuf would."""
    records = []
    offset = 0
    while offset < len(response):
        magic, length = struct.unpack_from("<II", response, offset)
        assert magic == MAGIC
        payload = response[offset + 8 : offset + 8 + length]
        offset += 8 + length + (-length % 4)
        assert response[offset - (-length % 4) : offset] == b"\0" * (-length % 4)
        labels = {}
        for number, entry in read_fields(payload):
            assert number == LABEL
            (key_field, key), (value_field, value) = read_fields(entry)
            assert (key_field, value_field) == (1, 2)
            ((kind, data),) = read_fields(value)
            values: list[Any] = []
            shape: list[int] = []
            for part, content in read_fields(data):
                if part == 1 and kind in PACK:
                    size = struct.calcsize(PACK[kind])
                    values = list(struct.unpack(f"<{len(content) // size}{PACK[kind]}", content))
                elif part == 1:
                    values = [v - (1 << 64) if v >> 63 else v for v in read_varints(content)]
                else:
                    assert part == 3
                    shape = read_varints(content)
            labels[key.decode()] = (kind, values, shape)
        records.append(labels)
    return records


def as_request(response: bytes) -> bytes:
    """A response turned into a request: each record's labels become its features."""
    records = [
        record({name: tensor(*label[:2], shape=label[2]) for name, label in labels.items()})
        for labels in read_response(response)
    ]
    return body(*records)
