"""Logging: one line per event on stderr, for the server, gunicorn and handlers alike.

CloudWatch turns every line a container writes into its own event, so a multi-line
traceback becomes dozens of unrelated events; the formatter folds them into one line.
``GET /ping`` is left out of the access log unless asked for: SageMaker pings every few
seconds and those lines would drown everything else.

The access log is written without the logging machinery: building a log record, finding
its caller and formatting its time cost 40 µs of CPU per request in a worker, a sixth of a
small model's whole request. :class:`AccessLines` writes the same line format, with the time
formatted once a second, and gathers the lines into blocks: a worker writes them out as soon
as its event loop has nothing else to do (so under load one write carries many lines), at
most :data:`ACCESS_FLUSH_SECONDS` later, before any other line it logs, and as it stops. A
worker's lines so stay in time order with each other and with its other lines.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

#: The access log's logger name, as gunicorn names it; its level switches access lines off.
ACCESS_LOGGER = "gunicorn.access"

#: Largest block of access lines written at once: what a pipe writes atomically (PIPE_BUF),
#: so that blocks from several workers sharing stderr never interleave mid-line.
BLOCK_CHARS = 4096

#: How often a worker writes out its pending access lines, in seconds.
ACCESS_FLUSH_SECONDS = 0.2


class OneLineFormatter(logging.Formatter):
    """Formats as usual, then folds line breaks (tracebacks included) into ``" | "``."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


class AccessLines:
    """Access lines in :data:`FORMAT`, gathered and written to stderr in blocks of whole lines.

    A block is written when the next line would not fit in :data:`BLOCK_CHARS`, and by
    :meth:`flush`. ``on_pending``, when set, is called as a line arrives with none pending:
    the worker schedules a flush there.
    """

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._pending_chars = 0
        self._second = -1
        self._stamp = ""
        self.on_pending: Callable[[], None] | None = None

    def add(self, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # logging's default asctime, down to the second
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            )
        milliseconds = int((now - second) * 1000)
        line = f"{self._stamp},{milliseconds:03d} INFO [{os.getpid()}] {ACCESS_LOGGER}: {message}\n"
        if self._pending_chars + len(line) > BLOCK_CHARS:
            self.flush()
        if not self._pending and self.on_pending is not None:
            self.on_pending()
        self._pending.append(line)
        self._pending_chars += len(line)

    def flush(self) -> None:
        if self._pending:
            # Swapped, not cleared: a log line from another thread flushes too.
            pending, self._pending = self._pending, []
            self._pending_chars = 0
            sys.stderr.write("".join(pending))
            sys.stderr.flush()


#: This process's access lines.
access_lines = AccessLines()


class StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """logging's, writing this process's pending access lines first: a line logged after a
    request was answered comes after that request's access line."""

    def emit(self, record: logging.LogRecord) -> None:
        access_lines.flush()
        super().emit(record)


class AccessLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger with a lean access line: ``addr "METHOD /path HTTP/1.1" 200 123 4ms``.

    gunicorn's own builds a dictionary of every request header for each line, which costs as
    much as serving a small model; this formats the few fields the line has.
    """

    log_pings = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """gunicorn's call, for the requests it serves itself."""
        major, minor = req.version
        # As gunicorn's own access log reads it: its answer to a request it refuses has a
        # status line but no status_code.
        self.served(
            environ.get("REMOTE_ADDR", "-"),
            f"{req.method} {req.uri} HTTP/{major}.{minor}",
            req.path,
            str(resp.status),
            resp.sent,
            request_time.total_seconds(),
        )

    def served(
        self, remote: str, request_line: str, path: str, status: str, sent: int, seconds: float
    ) -> None:
        """Write the line for one answered request (``status``: the status line)."""
        if not self.access_log.isEnabledFor(logging.INFO):
            return
        if path == "/ping" and not self.log_pings:
            return
        access_lines.add(
            f'{remote} "{request_line}" {status.split(None, 1)[0]} {sent} {seconds * 1000:.0f}ms'
        )


def access_logger(log_pings: bool) -> type[AccessLogger]:
    """The logger class gunicorn should build, access-logging pings or not."""
    return type("ServingAccessLogger", (AccessLogger,), {"log_pings": log_pings})


def logging_config(level: int) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping, which gunicorn applies in every process."""
    quiet = {"level": level, "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": OneLineFormatter, "format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": f"{__name__}.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": quiet, ACCESS_LOGGER: dict(quiet)},
    }
