"""HTTP/1.x heads parsed by gunicorn_h1c's C parser when it is installed (the ``fast`` extra),
else by the few lines of Python below, which have the same interface: ``parse_request`` and
``parse_response`` take the bytes received so far (bytes, a bytearray or a memoryview) and
return the head as a dict (``headers`` as ``(name, value)`` bytes, ``consumed``: the head's
length), or raise ``IncompleteError`` (more bytes needed) or ``ParseError``.

``serving endpoint`` reads its clients' requests and its containers' answers with these. The
Python parser is strict where it matters to framing (one start line, ``name: value`` fields
without whitespace before the colon, no obsolete line folding) and slower: it is the fallback
for a machine that cannot compile the C one.
"""

from __future__ import annotations

import re
from typing import Any

#: The C parser's module, or ``None`` when it is not installed.
c_parser: Any = None
try:
    import gunicorn_h1c
except ImportError:
    pass
else:
    c_parser = gunicorn_h1c


class IncompleteError(Exception):
    """The head has not ended yet."""


class ParseError(Exception):
    """The bytes are no HTTP/1.x head."""


_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.([01])")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")


def _head(data: bytes | bytearray | memoryview) -> tuple[bytes, list[tuple[bytes, bytes]], int]:
    if isinstance(data, memoryview):
        data = data.tobytes()
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise IncompleteError
    start_line, *lines = bytes(data[:end]).split(b"\r\n")
    headers = []
    for line in lines:
        field = _FIELD.fullmatch(line)
        if field is None:
            raise ParseError(f"malformed header line {line[:80]!r}")
        headers.append((field[1], field[2]))
    return start_line, headers, end + 4


def _parse_request(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    start_line, headers, consumed = _head(data)
    line = _REQUEST_LINE.fullmatch(start_line)
    if line is None:
        raise ParseError(f"malformed request line {start_line[:80]!r}")
    return {
        "method": line[1],
        "path": line[2],
        "minor_version": int(line[3]),
        "headers": headers,
        "consumed": consumed,
    }


def _parse_response(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    start_line, headers, consumed = _head(data)
    line = _STATUS_LINE.fullmatch(start_line)
    if line is None:
        raise ParseError(f"malformed status line {start_line[:80]!r}")
    return {
        "status": int(line[2]),
        "message": line[3] or b"",
        "minor_version": int(line[1]),
        "headers": headers,
        "consumed": consumed,
    }


if c_parser is not None:
    IncompleteError = c_parser.IncompleteError  # type: ignore[misc]
    ParseError = c_parser.ParseError  # type: ignore[misc]
    parse_request = c_parser.parse_request
    parse_response = c_parser.parse_response
else:
    parse_request = _parse_request
    parse_response = _parse_response
