"""Logging: one line per event on stderr, for the server, gunicorn and handlers alike.

CloudWatch turns every line a container writes into its own event, so a multi-line
traceback becomes dozens of unrelated events; the formatter folds them into one line.
``GET /ping`` is left out of the access log unless asked for: SageMaker pings every few
seconds and those lines would drown everything else.
"""

from __future__ import annotations

import logging
from typing import Any

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


class OneLineFormatter(logging.Formatter):
    """Formats as usual, then folds line breaks (tracebacks included) into ``" | "``."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


class SkipPings(logging.Filter):
    """Drops gunicorn access-log records of ``/ping``."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        return not (isinstance(atoms, dict) and atoms.get("U") == "/ping")


def logging_config(level: int, log_pings: bool) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping, which gunicorn applies in every process."""
    access: dict[str, Any] = {"level": level, "handlers": [], "propagate": True}
    if not log_pings:
        access["filters"] = ["skip_pings"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": OneLineFormatter, "format": FORMAT}},
        "filters": {"skip_pings": {"()": SkipPings}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": access,
        },
    }
