"""The access log: lines in the format of every other log line, written in blocks."""

from __future__ import annotations

import io
import logging
import os
import sys
import time

import pytest

from serving import logs
from serving.logs import ACCESS_LOGGER, BLOCK_CHARS, FORMAT, AccessLines, OneLineFormatter


class Recorder(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def recorded_stderr(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """sys.stderr replaced, in the test itself: pytest sets its own after fixtures run."""
    recorder = Recorder()
    monkeypatch.setattr(sys, "stderr", recorder)
    return recorder


def test_lines_wait_for_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = recorded_stderr(monkeypatch)
    lines = AccessLines()
    lines.add("first")
    lines.add("second")
    assert stderr.writes == []
    lines.flush()
    assert len(stderr.writes) == 1  # both lines in one write
    assert [line.rsplit(": ", 1)[1] for line in stderr.getvalue().splitlines()] == [
        "first",
        "second",
    ]
    lines.flush()
    assert len(stderr.writes) == 1  # nothing pending: nothing written


def test_blocks_hold_whole_lines_and_fit_a_pipes_atomic_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = recorded_stderr(monkeypatch)
    lines = AccessLines()
    messages = [f"request {n} " + "x" * (n % 150) for n in range(1000)]
    for message in messages:
        lines.add(message)
    lines.flush()
    assert len(stderr.writes) > 10
    assert all(len(block) <= BLOCK_CHARS and block.endswith("\n") for block in stderr.writes)
    assert [line.split(": ", 1)[1] for line in stderr.getvalue().splitlines()] == messages


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])  # local time, as logging's
def test_a_line_reads_as_the_formatter_would_write_it(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    stderr = recorded_stderr(monkeypatch)
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    now = 1_795_000_000.0625  # 62 ms past a second: written ",062"
    monkeypatch.setattr(time, "time", lambda: now)
    lines = AccessLines()
    lines.add('127.0.0.1 "POST /invocations HTTP/1.1" 200 52 1ms')
    lines.flush()
    record = logging.makeLogRecord(
        {
            "name": ACCESS_LOGGER,
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": '127.0.0.1 "POST /invocations HTTP/1.1" 200 52 1ms',
            "created": now,
            "msecs": 62.0,
            "process": os.getpid(),
        }
    )
    expected = OneLineFormatter(FORMAT).format(record) + "\n"
    monkeypatch.undo()
    time.tzset()
    assert stderr.getvalue() == expected


def test_a_log_line_writes_the_pending_access_lines_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = recorded_stderr(monkeypatch)
    monkeypatch.setattr(logs, "access_lines", AccessLines())
    logs.access_lines.add("answered first")
    handler = logs.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(message)s"))
    handler.emit(logging.makeLogRecord({"msg": "logged after", "levelno": logging.INFO}))
    assert stderr.getvalue().splitlines()[-1] == "logged after"
    assert stderr.getvalue().splitlines()[0].endswith(": answered first")


def test_the_first_pending_line_asks_for_a_flush() -> None:
    lines = AccessLines()
    asked: list[int] = []
    lines.on_pending = lambda: asked.append(len(asked))
    lines.add("one")
    lines.add("two")
    assert asked == [0]  # once per block, not per line
    lines.flush()
    lines.add("three")
    assert asked == [0, 1]
