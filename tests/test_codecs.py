"""Codecs in process: the registry's rules and the edge cases of each format."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

from handlers.codecs import (
    CodecRegistry,
    CsvCodec,
    DuplicateMediaType,
    JsonCodec,
    JsonLinesCodec,
    NpyCodec,
    NpzCodec,
    default_codecs,
)
from handlers.codecs.numpy_codecs import plain_header
from handlers.errors import InvalidInput, NotAcceptable
from handlers.tensors import Outputs
from tests.wire import npy_bytes


class CsvDecoderOnly:
    media_type = "text/csv"

    def decode(self, body: bytes) -> np.ndarray:
        return np.zeros(1)


def test_default_registry_has_every_builtin_both_ways() -> None:
    registry = default_codecs()
    expected = [
        "application/json",
        "application/jsonlines",
        "text/csv",
        "application/x-npy",
        "application/x-npz",
        "application/x-recordio-protobuf",
    ]
    assert registry.decodable == expected
    assert registry.encodable == expected
    assert default_codecs() is not registry  # built anew, not shared module state


def test_duplicate_media_type_is_refused() -> None:
    registry = default_codecs()
    with pytest.raises(DuplicateMediaType, match="a decoder for text/csv is already registered"):
        registry.register(CsvDecoderOnly())
    assert isinstance(registry.decoder("text/csv"), CsvCodec)


def test_override_replaces_only_the_roles_the_codec_has() -> None:
    registry = default_codecs()
    replacement = CsvDecoderOnly()
    registry.register(replacement, override=True)
    assert registry.decoder("TEXT/CSV") is replacement
    assert isinstance(registry.encoder("text/csv"), CsvCodec)


def test_an_object_that_neither_decodes_nor_encodes_is_refused() -> None:
    class Nothing:
        media_type = "x/y"

    with pytest.raises(TypeError):
        CodecRegistry([Nothing()])  # type: ignore[list-item]


def test_npy_is_read_without_a_copy() -> None:
    body = npy_bytes(np.arange(8, dtype=np.float32).reshape(2, 4))
    array = NpyCodec().decode(body)
    assert isinstance(array, np.ndarray)
    assert not array.flags.owndata  # a view of the body
    np.testing.assert_array_equal(array, np.arange(8).reshape(2, 4))


def test_npy_with_extra_bytes_is_refused() -> None:
    with pytest.raises(InvalidInput, match="body has 36"):
        NpyCodec().decode(npy_bytes(np.zeros((2, 4), np.float32)) + b"junk")


def test_npz_that_would_expand_past_the_cap_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros(10_000))
    assert len(buffer.getvalue()) < 1000
    with pytest.raises(InvalidInput, match="expands to"):
        NpzCodec(max_expanded_bytes=1000).decode(buffer.getvalue())
    assert NpzCodec(max_expanded_bytes=100_000).decode(buffer.getvalue())


def npy_with_header(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    npy_format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


@pytest.mark.parametrize("shape", [(-2, -2), (2**62, 2**62, 0)])
def test_npy_with_an_impossible_shape_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match="impossible shape"):
        NpyCodec().decode(npy_with_header(shape))


@pytest.mark.parametrize("fortran_order", [False, True])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (1, 3, 224, 224), (2, 0, 3), (10**6, 0)])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "|b1", "|u1", "<i8", "<f2", "<c8", "<U3"])
def test_the_plain_header_reader_reads_what_numpy_reads(
    dtype: str, shape: tuple[int, ...], fortran_order: bool
) -> None:
    array = np.zeros(shape, dtype)
    if fortran_order:
        array = np.asfortranarray(array)
    body = npy_bytes(array)
    stream = io.BytesIO(body)
    npy_format.read_magic(stream)
    expected = (*npy_format.read_array_header_1_0(stream), stream.tell())
    if len(shape) < 2:
        expected = (expected[0], False, *expected[2:])  # numpy writes 1-D arrays as C order
    parsed = plain_header(body)
    if dtype in ("<c8", "<U3"):  # not a numeric or boolean dtype: numpy's reader decides
        assert parsed is None
    else:
        assert parsed == expected


def header_only(header: str, minor: int = 0) -> bytes:
    """A version 1 ``.npy`` header holding ``header``, padded as numpy pads it."""
    text = header.encode("latin-1")
    padding = 64 - (10 + len(text) + 1) % 64
    length = (len(text) + padding + 1).to_bytes(2, "little")
    return npy_format.MAGIC_PREFIX + bytes([1, minor]) + length + text + b" " * padding + b"\n"


@pytest.mark.parametrize(
    "header",
    [
        "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",  # other key order
        "{'descr':'<f4','fortran_order':False,'shape':(2,3)}",  # other spacing
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3,), }",  # a trailing comma
    ],
)
def test_headers_other_writers_write_are_read_by_numpys_reader(header: str) -> None:
    body = header_only(header) + np.arange(6, dtype="<f4").tobytes()
    assert plain_header(body) is None
    np.testing.assert_array_equal(
        NpyCodec().decode(body), np.arange(6, dtype=np.float32).reshape(2, 3)
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x93NUMPY",
        b"\x93NUMPY\x01\x00\xff\xff{'descr'",  # a header longer than the body
        b"\x93NUMPY\x09\x00" + b" " * 60,  # an unknown version
        # with the data their shape would need, so that only the header can be refused
        header_only("{'descr': '<f4', 'fortran_order': False, 'shape': (3), }") + bytes(12),
        header_only("{'descr': '<f4', 'fortran_order': False, 'shape': (003,), }") + bytes(12),
        header_only("{'descr': '<f3', 'fortran_order': False, 'shape': (3,), }") + bytes(12),
        header_only("{'descr': '<f4', 'fortran_order': False, 'shape': (%s,), }" % ("9" * 5000)),
        header_only("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }", minor=9),
    ],
)
def test_truncated_or_unknown_headers_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        NpyCodec().decode(body)


def test_encrypted_npz_member_is_refused() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros(2))
    body = bytearray(buffer.getvalue())
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = body.index(signature)
        body[start + flags_at] |= 1  # the "encrypted" flag
    with pytest.raises(InvalidInput, match="cannot be read"):
        NpzCodec().decode(bytes(body))


def test_npz_naming_an_array_twice_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", npy_bytes(np.zeros(2)))
        archive.writestr("x", npy_bytes(np.ones(2)))
    with pytest.raises(InvalidInput, match="names an array twice"):
        NpzCodec().decode(buffer.getvalue())


def test_npz_encodes_outputs_whatever_their_names() -> None:
    outputs: Outputs = {"file": np.arange(3), "allow_pickle": np.ones(2, np.float32)}
    with np.load(io.BytesIO(NpzCodec().encode(outputs)), allow_pickle=False) as archive:
        assert archive.files == ["file", "allow_pickle"]
        np.testing.assert_array_equal(archive["file"], [0, 1, 2])


def test_record_formats_write_nothing_for_no_records() -> None:
    assert CsvCodec().encode({"y": np.zeros((0, 4), np.float32)}) == b""
    assert JsonLinesCodec().encode({"y": np.zeros((0, 4), np.float32)}) == b""


@pytest.mark.parametrize(
    ("codec", "body"),
    [(CsvCodec(), b"1,2\n"), (JsonCodec(), b"[[1, 2]]"), (JsonLinesCodec(), b"[1, 2]\n")],
)
def test_a_utf8_byte_order_mark_is_ignored(codec: CsvCodec | JsonCodec, body: bytes) -> None:
    np.testing.assert_array_equal(codec.decode(b"\xef\xbb\xbf" + body), [[1, 2]])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[1, 2]\n[3, 4]\n", [[1, 2], [3, 4]]),
        (b'{"instances": [[1, 2], [3, 4]]}\n[5, 6]', [[1, 2], [3, 4], [5, 6]]),
        (b'{"features": [1, 2]}\r\n{"data": {"features": {"values": [3, 4]}}}', [[1, 2], [3, 4]]),
        (b'{"inputs": [1, 2]}\n{"inputs": [3, 4]}', [[1, 2], [3, 4]]),
    ],
)
def test_jsonlines_records(body: bytes, expected: list[list[int]]) -> None:
    np.testing.assert_array_equal(JsonLinesCodec().decode(body), expected)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]\n{nope", "line 2: is not valid JSON"),
        (b'[1, 2]\n{"inputs": {"a": [1, 2]}}', "mixes arrays and objects"),
        (b'{"inputs": {"a": 1}}\n{"inputs": {"b": 1}}', "record 1 has inputs ['b']"),
        (b"", "no records"),
        (b"\n\n", "line 1: is empty"),
        (b"[1, 2]\n\n[3, 4]\n", "application/jsonlines line 2: is empty"),
        (b"[1, 2]\r\n \r\n", "application/jsonlines line 2: is empty"),
    ],
)
def test_jsonlines_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        JsonLinesCodec().decode(body)


@pytest.mark.parametrize(
    ("codec", "outputs"),
    [
        (JsonCodec(), {"y": np.array([[1.5, 2.0]], np.float32)}),
        (JsonCodec(), {"a": np.array([[1.0]]), "b": np.array([[2, 3]])}),
        (JsonLinesCodec(), {"y": np.array([[1.5, 2.0], [3.0, 4.0]], np.float32)}),
    ],
)
def test_a_response_reads_back_as_a_request(
    codec: JsonCodec | JsonLinesCodec, outputs: dict[str, np.ndarray]
) -> None:
    """What one container answers, the next in an inference pipeline is sent."""
    decoded = codec.decode(codec.encode(outputs))
    if len(outputs) == 1:
        decoded = {"y": decoded} if isinstance(decoded, np.ndarray) else decoded
    assert isinstance(decoded, dict)
    for name, array in outputs.items():
        np.testing.assert_array_equal(decoded[name], array)


def test_json_inputs_list_is_the_one_unnamed_input() -> None:
    np.testing.assert_array_equal(JsonCodec().decode(b'{"inputs": [[1, 2]]}'), [[1, 2]])


@pytest.mark.parametrize("codec", [JsonLinesCodec(), CsvCodec()])
def test_record_formats_need_a_shared_first_axis(codec: JsonLinesCodec | CsvCodec) -> None:
    with pytest.raises(NotAcceptable, match="application/json instead"):
        codec.encode({"a": np.zeros((2, 3)), "b": np.zeros(3)})
    with pytest.raises(NotAcceptable):
        codec.encode({"scalar": np.float32(1.0) * np.ones(())})


def test_csv_writes_shortest_floats_and_booleans_as_digits() -> None:
    outputs = {
        "p": np.array([[0.1, 1e-8], [np.nan, np.inf]], np.float32),
        "flag": np.array([True, False]),
    }
    assert CsvCodec().encode(outputs) == b"0.1,1e-08,1\nnan,inf,0\n"


def test_json_writes_non_finite_as_null() -> None:
    outputs = {"p": np.array([np.nan, -np.inf, 0.5], np.float32)}
    assert JsonCodec().encode(outputs) == b'{"predictions":[null,null,0.5]}'


def test_json_writes_arrays_orjson_cannot_take_directly() -> None:
    outputs = {"t": np.arange(6, dtype=np.int16).reshape(2, 3).T, "h": np.ones(2, np.float16)}
    assert JsonCodec().encode(outputs) == b'{"outputs":{"t":[[0,3],[1,4],[2,5]],"h":[1.0,1.0]}}'


def test_csv_numbers_read_back_exactly() -> None:
    generator = np.random.default_rng(7)
    scale = 10.0 ** generator.integers(-30, 30, size=(500, 1))
    outputs = {
        "f32": (generator.normal(size=(500, 3)) * scale).astype(np.float32),
        "f64": generator.normal(size=(500, 2)) * scale,
        "i64": generator.integers(-(2**53), 2**53, size=500),
        "u8": generator.integers(0, 255, size=(500, 1), dtype=np.uint8),
        "f16": generator.normal(size=500).astype(np.float16),
        "b": generator.random(500) > 0.5,
    }
    outputs["f64"][7, 1] = np.nan  # numpy writes this output; orjson the others
    table = CsvCodec().decode(CsvCodec().encode(outputs))
    assert isinstance(table, np.ndarray)
    assert table.shape == (500, 9)
    np.testing.assert_array_equal(table[:, :3].astype(np.float32), outputs["f32"])
    np.testing.assert_array_equal(table[:, 3:5], outputs["f64"])  # NaN equals NaN here
    np.testing.assert_array_equal(table[:, 5], outputs["i64"])
    np.testing.assert_array_equal(table[:, 6], outputs["u8"][:, 0])
    np.testing.assert_array_equal(table[:, 7].astype(np.float16), outputs["f16"])
    np.testing.assert_array_equal(table[:, 8], outputs["b"])


@pytest.mark.parametrize(
    "body", [b'{"predictions": [1, 2], "x": [3]}', b'{"outputs": [1, 2], "x": [3]}']
)
def test_a_response_key_beside_other_keys_is_not_a_response(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="expected a JSON array"):
        JsonCodec().decode(body)


def test_csv_numbers_are_written_as_json_writes_them() -> None:
    """The shortest round-trip text, as orjson writes it ("1e-7", not numpy's "1e-07")."""
    outputs = {"f": np.array([[1e-7, 123456789.0]], np.float32), "i": np.array([-3])}
    assert CsvCodec().encode(outputs) == b"1e-7,123456790.0,-3\n"


def test_mangled_npy_headers_decode_or_are_refused() -> None:
    rng = np.random.default_rng(7)
    valid = npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))
    for _ in range(3000):
        body = bytearray(valid)
        for position in rng.integers(0, 128, size=rng.integers(1, 4)):
            body[position] = rng.choice(list(b"0123456789,() '<>|fuib{}:TrueFalse\n\x00\xff"))
        try:
            decoded = NpyCodec().decode(bytes(body))
        except InvalidInput:
            continue
        assert isinstance(decoded, np.ndarray)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(10, dtype=np.float32).reshape(1, 10),
        np.zeros((0,), np.int64),
        np.ones((3, 4, 5), ">f8"),
        np.array([True, False]),
        np.arange(6, dtype=np.float16).reshape(2, 3),
        np.zeros((10**12, 0), np.uint8),  # a long first dimension: less growth padding
        np.zeros((0, 10**9, 10**9), np.uint8),  # long dimensions, no data
        np.zeros((1,) * 16, np.uint8),  # a header that numpy's padding takes past 128 bytes
        np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2],  # not contiguous
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.float32(2.5),
        np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]),  # structured
        np.array(["ab", "c"]),
        np.array(["2026-12-03", "NaT"], dtype="datetime64[s]"),  # no buffer of its own
        np.array([1, 2], dtype="timedelta64[ms]"),
        np.zeros(2, np.complex64),
    ],
)
def test_npy_responses_are_what_np_save_writes(array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert NpyCodec().encode({"y": array}) == buffer.getvalue()
    assert NpyCodec().encode({"y": array}) == buffer.getvalue()  # its header kept, the same
