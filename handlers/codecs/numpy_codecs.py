"""``application/x-npy`` and ``application/x-npz``, never unpickling.

Object arrays (which ``.npy`` stores as a pickle) are refused without being read. A ``.npy``
body whose array is numeric is used in place, without a copy; the handler copies only if
the model wants another dtype.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ..errors import InvalidInput, NotAcceptable
from ..tensors import Array, Inputs, Outputs

#: Default for the largest total size the arrays of one ``.npz`` body may expand to
#: (compressed members could otherwise unpack to far more memory than the body limit
#: suggests); the server sets it from the body limit.
MAX_NPZ_EXPANDED_BYTES = 1 << 30

_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}


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
    stream = io.BytesIO(body)
    try:
        version = npy_format.read_magic(stream)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise InvalidInput(f"application/x-npy format version {version} is not supported")
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, EOFError) as exc:  # bad magic, truncated or malformed header
        raise InvalidInput(f"body is not a valid .npy array: {exc}") from exc
    _refuse_unless_numeric(dtype, ".npy array")
    if any(not isinstance(dim, int) or dim < 0 for dim in shape):
        raise InvalidInput(f".npy header declares an impossible shape {shape}")
    offset = stream.tell()
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


class NpyCodec:
    media_type = "application/x-npy"

    def decode(self, body: bytes) -> Inputs:
        return read_npy(body)

    def encode(self, outputs: Outputs) -> bytes:
        if len(outputs) != 1:
            raise NotAcceptable(
                f"application/x-npy holds one array, the model has {len(outputs)} outputs "
                f"({', '.join(outputs)}); ask for application/x-npz or application/json"
            )
        buffer = io.BytesIO()
        np.save(buffer, next(iter(outputs.values())), allow_pickle=False)
        return buffer.getvalue()


class NpzCodec:
    """Named arrays, one per model input; the response holds every output by name."""

    media_type = "application/x-npz"

    def __init__(self, max_expanded_bytes: int = MAX_NPZ_EXPANDED_BYTES) -> None:
        self.max_expanded_bytes = max_expanded_bytes

    def decode(self, body: bytes) -> Inputs:
        try:
            archive = zipfile.ZipFile(io.BytesIO(body))
        except zipfile.BadZipFile as exc:
            raise InvalidInput(f"body is not a valid .npz archive: {exc}") from exc
        with archive:
            members = archive.infolist()
            if not members:
                raise InvalidInput(".npz archive holds no arrays")
            expanded = sum(member.file_size for member in members)
            if expanded > self.max_expanded_bytes:
                raise InvalidInput(
                    f".npz archive expands to {expanded} bytes, more than the "
                    f"{self.max_expanded_bytes} allowed"
                )
            names = [_array_name(member.filename) for member in members]
            if len(set(names)) < len(names):
                raise InvalidInput(f".npz archive names an array twice: {', '.join(names)}")
            return {
                name: self._read_member(archive, m) for name, m in zip(names, members, strict=True)
            }

    @staticmethod
    def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> Array:
        what = f".npz member {member.filename!r}"
        try:
            # zipfile stops at the declared size, which was checked against the cap.
            data = archive.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
            # RuntimeError: an encrypted member
            raise InvalidInput(f"{what} cannot be read: {exc}") from exc
        try:
            return read_npy(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{what}: {exc.message}") from exc

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
