"""Parsers for setting values: each takes the text of a flag or environment variable and
returns the value, or raises ``ValueError`` with the reason, which the settings table turns into
a message naming the variable and the value."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be between {low} and {high}" if high else f"must be >= {low}")
        return value

    return parse


def positive_number(text: str) -> float:
    value = non_negative_number(text)
    if value == 0:
        raise ValueError("must be a positive number")
    return value


def non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number >= 0")
    return value


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("not a boolean (true/false)")


_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


def media_type(text: str) -> str:
    value = text.strip().lower()
    if not _MEDIA_TYPE.match(value):
        raise ValueError("not a media type such as application/json")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser for one of ``choices`` (upper or lower case, as the choices are written)."""

    def parse(text: str) -> str:
        value = text.strip()
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise ValueError(f"must be {' or '.join(choices)}")

    return parse


def log_level(text: str) -> int:
    value = text.strip()
    if value.lstrip("-").isdigit():
        level = int(value)
        if not 0 <= level <= 50:
            raise ValueError("a numeric log level must be between 0 and 50")
        return level
    level_by_name = logging.getLevelNamesMapping()
    if value.upper() not in level_by_name:
        raise ValueError("not a level name (DEBUG, INFO, WARNING, ERROR) or number (10-50)")
    return level_by_name[value.upper()]


def providers(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError("no execution provider named")
    return names


def nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def optional(text: str) -> str | None:
    return text.strip() or None


def code_dir(text: str) -> Path | None:
    value = text.strip()
    return None if not value or value.startswith("s3://") else Path(value)


def plugin_names(text: str) -> tuple[str, ...] | None:
    """``all`` (every installed plugin: ``None``), ``none``, or entry-point names."""
    value = text.strip()
    if value.lower() == "all":
        return None
    if value.lower() in ("none", ""):
        return ()
    return tuple(name.strip() for name in value.split(",") if name.strip())
