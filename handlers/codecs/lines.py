"""Lines of a multi-record body (CSV, JSON Lines): ``\\n`` or ``\\r\\n`` ends a line and the
last line may lack it. One record a line, one output line per input line: batch transform
(SplitType ``Line``) joins the outputs back to the inputs by position.
"""

from __future__ import annotations


def split_lines(body: bytes) -> list[bytes]:
    """The lines of ``body`` without their line breaks; a final line break ends the last
    line rather than starting an empty one."""
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def count_lines(body: bytes) -> int:
    """``len(split_lines(body))``, without splitting."""
    if not body:
        return 0
    return body.count(b"\n") + (not body.endswith(b"\n"))


#: Why an empty line is refused (or answered with a placeholder).
EMPTY_LINE = "is empty; every line must hold one record"
