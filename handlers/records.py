"""Multi-record bodies answered chunk by chunk: batch transform's MultiRecord requests.

A batch transform job with SplitType ``Line`` sends many CSV or JSON Lines records in one
body (up to 100 MB) and joins the response back to the input by position, so the response
must hold exactly one output line per input line, in order. :class:`RecordChunks` answers such
a body in chunks of whole lines, so the decoded arrays and the model's inputs and outputs
stay the size of one chunk, not of the body. The encoded response is kept until the last
chunk is answered (it is sent with a Content-Length, and a bad record after the first chunk
must still turn the whole answer into a 400): in memory while small, past ``spool_bytes`` in
a temporary file, so the worker's memory follows the chunk either way.

A bad record either fails the request with a 400 naming its line in the whole body, or, when
placeholders are asked for, gets a placeholder line from the response's encoder (CSV: an empty
line; JSON Lines: ``{"error": "..."}``) so that the other records' lines keep their places.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from .base import Encoded, Handler, InvocationContext
from .codecs.lines import count_lines, split_lines
from .errors import InvalidInput, RecordError

log = logging.getLogger(__name__)

#: Request types whose records are lines.
LINE_MEDIA_TYPES = frozenset({"text/csv", "application/jsonlines"})
#: Response types whose answers for consecutive chunks, joined, are the answer for the whole.
JOINABLE_MEDIA_TYPES = frozenset(
    {"text/csv", "application/jsonlines", "application/x-recordio-protobuf"}
)


def answers_in_chunks(handler: Handler, context: InvocationContext) -> bool:
    """Whether this request's body may be answered chunk by chunk (see the module docstring)."""
    return (
        handler.splits_records
        and context.content_type in LINE_MEDIA_TYPES
        and context.accept in JOINABLE_MEDIA_TYPES
    )


def line_chunks(read: Callable[[int], bytes], chunk_bytes: int) -> Iterator[bytes]:
    """Chunks of whole lines, about ``chunk_bytes`` each (a longer line is one chunk), from
    ``read(n)``, which returns up to ``n`` bytes and ``b""`` at the end of the body."""
    pending: list[bytes] = []  # blocks of a line still going on; joined once it ends
    while block := read(chunk_bytes):
        end = block.rfind(b"\n") + 1  # only the new block: a long line stays linear
        if not end:
            pending.append(block)
            continue
        yield b"".join([*pending, block[:end]])
        pending = [block[end:]] if end < len(block) else []
    if pending:
        yield b"".join(pending)


class Answers:
    """A response body built in order: parts in memory, or a temporary file once large."""

    def __init__(self, media_type: str, spool_bytes: int) -> None:
        self.media_type = media_type
        self.parts: list[bytes] = []
        self.file: BinaryIO | None = None
        self.length = 0
        self._spool_bytes = spool_bytes

    def add(self, parts: list[bytes]) -> None:
        self.length += sum(map(len, parts))
        if self.file is None and self.length > self._spool_bytes:
            try:
                self.file = tempfile.TemporaryFile()  # noqa: SIM115 - the response closes it
            except OSError as exc:  # no writable temporary directory (docker run --read-only)
                log.warning("answers stay in memory: no temporary file (%s)", exc)
                self._spool_bytes = sys.maxsize  # not tried again for this body
            else:
                self.file.writelines(self.parts)
                self.parts = []
        if self.file is None:
            self.parts += parts
        else:
            self.file.writelines(parts)

    def body(self) -> list[bytes] | BinaryIO:
        """The parts, or the file rewound to its start (the caller closes it)."""
        if self.file is None:
            return self.parts
        self.file.seek(0)
        return self.file


class RecordChunks:
    """Answers one multi-record body, chunk by chunk, with ``handler.invoke``."""

    def __init__(
        self,
        handler: Handler,
        context: InvocationContext,
        *,
        spool_bytes: int,
        placeholders: bool = False,
        invoke: Callable[[bytes, InvocationContext], Encoded] | None = None,
    ) -> None:
        self.handler = handler
        self.context = context
        #: How a chunk is answered: ``handler.invoke``, or what serving wraps it in (admission).
        self._invoke = invoke or handler.invoke
        self._spool_bytes = spool_bytes
        encoder = handler.codecs.encoder(context.accept)
        self._placeholder: Callable[[str], bytes] | None = (
            getattr(encoder, "placeholder", None) if placeholders else None
        )

    def answer(self, chunks: Iterator[bytes]) -> Answers:
        """The response: every chunk's answers, in order."""
        answers = Answers(self.context.accept, self._spool_bytes)
        lines_before = 0
        try:
            for chunk in chunks:
                answers.add(self._answer(chunk, lines_before))
                lines_before += count_lines(chunk)
        except BaseException:
            if answers.file is not None:
                answers.file.close()
            raise
        if not lines_before:
            raise InvalidInput(f"{self.context.content_type} body has no records")
        return answers

    def _answer(self, chunk: bytes, lines_before: int) -> list[bytes]:
        """The answers for ``chunk``; a bad record is found, then refused or replaced."""
        try:
            encoded = self._invoke(chunk, self.context)
        except InvalidInput as exc:
            if isinstance(exc, RecordError) and self._placeholder is None:
                raise exc.moved(lines_before) from exc
            lines = split_lines(chunk)
            if len(lines) == 1:
                return [self._bad_record(exc, lines_before + 1)]
            # Which record is bad: the decoder says (the lines before it decode), or halving
            # finds it (a model's refusal of one row fails the whole chunk). The lines after
            # it are halved too, so that many bad records cost log-deep recursion, not one
            # level each.
            if isinstance(exc, RecordError) and exc.line <= len(lines):
                bad = exc.line - 1
                return [
                    *self._answer_lines(lines[:bad], lines_before),
                    self._bad_record(exc, lines_before + exc.line),
                    *self._answer_halves(lines[bad + 1 :], lines_before + exc.line),
                ]
            return self._answer_halves(lines, lines_before)
        self._media_type = encoded.media_type
        return [encoded.body]

    def _answer_lines(self, lines: list[bytes], lines_before: int) -> list[bytes]:
        return self._answer(b"\n".join(lines) + b"\n", lines_before) if lines else []

    def _answer_halves(self, lines: list[bytes], lines_before: int) -> list[bytes]:
        half = len(lines) // 2
        return [
            *self._answer_lines(lines[:half], lines_before),
            *self._answer_lines(lines[half:], lines_before + half),
        ]

    def _bad_record(self, exc: InvalidInput, line: int) -> bytes:
        reason = exc.reason if isinstance(exc, RecordError) else exc.message
        if self._placeholder is None:
            raise RecordError(self.context.content_type, line, reason) from exc
        log.info("placeholder for %s line %d: %s", self.context.content_type, line, reason)
        return self._placeholder(reason)
