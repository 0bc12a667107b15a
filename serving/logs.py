"""Logging: one line per event on stderr, for the server, gunicorn and handlers alike.

CloudWatch turns every line a container writes into its own event, so a multi-line
traceback becomes dozens of unrelated events; the formatter folds them into one line.
``GET /ping`` is left out of the access log unless asked for: SageMaker pings every few
seconds and those lines would drown everything else.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    """Formats as usual, then folds line breaks (tracebacks included) into ``" | "``."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


class AccessLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn's logger with a lean access line: ``addr "METHOD /path HTTP/1.1" 200 123 4ms``.

    gunicorn's own builds a dictionary of every request header for each line, which costs as
    much as serving a small model; this formats the few fields the line has.
    """

    log_pings = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log.isEnabledFor(logging.INFO):
            return
        if req.path == "/ping" and not self.log_pings:
            return
        major, minor = req.version
        milliseconds = request_time.total_seconds() * 1000
        self.access_log.info(
            '%s "%s %s HTTP/%d.%d" %s %d %.0fms',
            environ.get("REMOTE_ADDR", "-"),
            req.method,
            req.uri,
            major,
            minor,
            resp.status_code,
            resp.sent,
            milliseconds,
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
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": quiet, "gunicorn.access": dict(quiet)},
    }
