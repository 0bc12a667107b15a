"""``application/x-npy`` and ``application/x-npz``, never unpickling.

Object arrays (which ``.npy`` stores as a pickle) are refused without being read. A ``.npy``
body whose array is numeric is used in place, without a copy; the handler copies only if
the model wants another dtype.

The header numpy writes for a plain dtype is read with a regular expression: numpy's reader
evaluates it as a Python literal, which took 20 µs of a small model's 0.3 ms request. Any
other header goes to numpy's reader, which decides. Responses get numpy's header and the
array's buffer, byte for byte what ``np.save`` writes: ``np.save`` into memory copies the
array through a buffered iterator, twice the time (6.8 against 3.8 µs for ten numbers, 28.5
against 14.6 µs for a 1000 x 100 float32 array, numpy 2.4).
"""

from __future__ import annotations

import functools
import io
import math
import re
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ..errors import DecodesTooLarge, InvalidInput, NotAcceptable
from ..tensors import (
    MAX_EXPANDED_BYTES,
    MAX_ROWS,
    Array,
    Inputs,
    Outputs,
    too_many_rows,
)

_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}

#: A dimension as numpy writes it: no leading zeros, at most 19 digits (int64).
_DIM = rb"(?:0|[1-9][0-9]{0,18})"

#: The header numpy writes for a numeric or boolean dtype, padded with spaces to a newline:
#: ``{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }``; the shape is ``()``,
#: ``(n,)`` or ``(n, m, ...)``.
_PLAIN_HEADER = re.compile(
    rb"\{'descr': '([<>|=][biuf][0-9]{1,2})', 'fortran_order': (False|True), "
    rb"'shape': \((|" + _DIM + rb",|" + _DIM + rb"(?:, " + _DIM + rb")+)\), \} *\n"
)

Header = tuple[tuple[int, ...], bool, np.dtype[Any], int]

#: An ``.npz`` member is inflated this many bytes at a time: zipfile's ``read()`` of a whole
#: member asks zlib for up to 2 GiB in one go, whatever size the member declares.
NPZ_PIECE = 1 << 20


def _refuse_unless_numeric(dtype: np.dtype[Any], what: str) -> None:
    if dtype.hasobject:
        raise InvalidInput(
            f"{what} holds Python objects, which .npy stores as a pickle; "
            "only numeric and boolean arrays are accepted"
        )
    if dtype.kind not in "biuf":
        raise InvalidInput(
            f"{what} has dtype {dtype}; only numeric and boolean arrays are accepted"
        )


def read_npy(body: bytes | memoryview) -> Array:
    """A read-only array over ``body`` (no copy), or :class:`InvalidInput`."""
    shape, fortran_order, dtype, offset = plain_header(body) or _numpy_header(body)
    _refuse_unless_numeric(dtype, ".npy array")
    if any(not isinstance(dim, int) or dim < 0 for dim in shape):
        raise InvalidInput(f".npy header declares an impossible shape {shape}")
    count = math.prod(shape)
    expected = count * dtype.itemsize
    if len(body) - offset != expected:
        raise InvalidInput(
            f".npy header declares {dtype} {list(shape)} ({expected} bytes of data), "
            f"but the body has {len(body) - offset}"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    try:
        if fortran_order:
            return flat.reshape(shape[::-1]).transpose()
        return flat.reshape(shape)
    except ValueError as exc:  # e.g. an empty array whose other dimensions overflow
        raise InvalidInput(f".npy header declares an impossible shape {shape}: {exc}") from exc


def plain_header(body: bytes | memoryview) -> Header | None:
    """Shape, Fortran order, dtype and data offset of a header as numpy writes it for a plain
    dtype (format version 1.0, the only one it writes for them); ``None`` for any other."""
    if body[:8] != npy_format.MAGIC_PREFIX + b"\x01\x00" or len(body) < 10:
        return None
    end = 10 + int.from_bytes(body[8:10], "little")
    match = _PLAIN_HEADER.fullmatch(bytes(body[10:end]))
    if match is None:
        return None
    descr, fortran_order, dims = match.groups()
    try:
        dtype = np.dtype(descr.decode("ascii"))
    except TypeError:  # no such type: numpy's reader says so
        return None
    shape = tuple(int(dim) for dim in dims.split(b",") if dim)
    return shape, fortran_order == b"True", dtype, end


def _numpy_header(body: bytes | memoryview) -> Header:
    """The header as numpy's reader reads it, or :class:`InvalidInput`."""
    stream = io.BytesIO(body)
    try:
        version = npy_format.read_magic(stream)
        read_header = _HEADER_READERS.get(version)
        header = None if read_header is None else read_header(stream)
    # Bad magic, a truncated or malformed header. numpy's reader evaluates the header as a
    # Python literal and raises whatever that raises on odd input (TokenError for an unclosed
    # bracket, TypeError for bytes keys): every one of them means the header is not valid.
    except Exception as exc:
        raise InvalidInput(f"body is not a valid .npy array: {exc}") from exc
    if header is None:
        raise InvalidInput(f"application/x-npy format version {version} is not supported")
    shape, fortran_order, dtype = header
    return shape, fortran_order, dtype, stream.tell()


def npy_bytes(array: Array) -> bytes:
    """``array`` in the ``.npy`` format, as ``np.save`` writes it: numpy writes the header,
    the array's own buffer follows it (``np.save`` into memory copies the data through a
    buffered iterator instead). Datetimes and timedeltas have no buffer: ``np.save`` writes
    them."""
    if not array.flags.c_contiguous or array.dtype.hasobject or array.dtype.kind in "mM":
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    return b"".join((_npy_header(array.dtype, array.shape), array.data))


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """numpy's header for a C-contiguous array: answers of one model repeat a few shapes,
    and numpy writes a header in Python (3.5 µs; more on caches a model's run left cold)."""
    buffer = io.BytesIO()
    header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    npy_format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


class NpyCodec:
    media_type = "application/x-npy"
    #: Read in place, at any size; answers are the array's buffer after numpy's header (a
    #: copy: 2,000 million values a second, bool and float64 alike).
    decode_bytes_per_second = math.inf
    encode_values_per_second = 2e9

    def decode(self, body: bytes) -> Inputs:
        return read_npy(body)

    def encode(self, outputs: Outputs) -> bytes:
        if len(outputs) != 1:
            raise NotAcceptable(
                f"application/x-npy holds one array, the model has {len(outputs)} outputs "
                f"({', '.join(outputs)}); ask for application/x-npz or application/json"
            )
        return npy_bytes(next(iter(outputs.values())))


class NpzCodec:
    """Named arrays, one per model input; the response holds every output by name."""

    media_type = "application/x-npz"
    #: At worst, deflate's 1032:1 inflated at about 1 GB/s (a 4 KB body of zeros: 4.8 ms);
    #: answers are stored members, written at 250 million values a second or more.
    decode_bytes_per_second = 1e6
    encode_values_per_second = 250e6

    def __init__(
        self, max_expanded_bytes: int = MAX_EXPANDED_BYTES, max_rows: int = MAX_ROWS
    ) -> None:
        self.max_expanded_bytes = max_expanded_bytes
        self.max_rows = max_rows

    def decode(self, body: bytes) -> Inputs:
        try:
            archive = zipfile.ZipFile(io.BytesIO(body))
        except zipfile.BadZipFile as exc:
            raise InvalidInput(f"body is not a valid .npz archive: {exc}") from exc
        with archive:
            members = archive.infolist()
            if not members:
                raise InvalidInput(".npz archive holds no arrays")
            # Declared sizes: a member is never inflated past its own (see _read_member).
            expanded = sum(member.file_size for member in members)
            if expanded > self.max_expanded_bytes:
                raise DecodesTooLarge(
                    f".npz archive expands to {expanded:,} bytes, more than the "
                    f"{self.max_expanded_bytes:,} allowed (SERVING_MAX_DECODED_MB)"
                )
            names = [_array_name(member.filename) for member in members]
            if len(set(names)) < len(names):
                raise InvalidInput(f".npz archive names an array twice: {', '.join(names)}")
            return {
                name: self._read_member(archive, m) for name, m in zip(names, members, strict=True)
            }

    def _read_member(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Array:
        """The member's array, inflated piece by piece up to the size it declares (checked
        against the cap): zipfile's own ``read()`` inflates everything the compressed data
        holds before it cuts it to that size (2.3 GiB for a 2 MB body), and checks the CRC
        only at the end. The rows its header declares are checked before the rest is read."""
        what, size = f".npz member {member.filename!r}", member.file_size
        try:
            with archive.open(member) as stream:
                piece = stream.read(min(NPZ_PIECE, size))
                data: bytes | bytearray = piece  # the whole member, if it is small
                filled = len(piece)
                if filled < size:
                    header = plain_header(piece)  # rows checked before the rest is inflated
                    self._check_rows(header[0] if header else (), what)
                    data = bytearray(size)
                    while piece:
                        data[filled - len(piece) : filled] = piece
                        piece = stream.read(min(NPZ_PIECE, size - filled))
                        filled += len(piece)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            # RuntimeError: an encrypted member
            raise InvalidInput(f"{what} cannot be read: {exc}") from exc
        if filled < size:
            raise InvalidInput(f"{what} ends after {filled} bytes; the archive declares {size}")
        try:
            array = read_npy(memoryview(data))
        except InvalidInput as exc:
            raise InvalidInput(f"{what}: {exc.message}") from exc
        self._check_rows(array.shape, what)
        return array

    def _check_rows(self, shape: tuple[int, ...], what: str) -> None:
        if shape and shape[0] > self.max_rows:
            raise too_many_rows(f"{shape[0]:,} rows ({what})", self.max_rows)

    def encode(self, outputs: Outputs) -> bytes:
        # Written member by member, as np.savez does: np.savez(**outputs) would take outputs
        # named "file" or "allow_pickle" for its own arguments.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, array in outputs.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    npy_format.write_array(member, np.asanyarray(array), allow_pickle=False)
        return buffer.getvalue()


def _array_name(filename: str) -> str:
    return filename[: -len(".npy")] if filename.endswith(".npy") else filename
