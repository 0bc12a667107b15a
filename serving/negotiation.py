"""Content-Type and Accept against what the handler takes and gives, decided before the body
is read.

Werkzeug parses the headers: parameters (``; charset=utf-8``, ignored), Accept lists,
q-values, ``type/*`` and ``*/*``. A request without Accept, or one that accepts anything, gets
the configured default response type. Clients send few distinct Accept headers, so each
answer is cached: parsing and matching an Accept header costs more than a small model's run.
Headers longer than SageMaker's API allows (:data:`MAX_HEADER_CHARS`) are refused unparsed: a
hostile 8 KB Accept, new each time, took 16 ms of the event loop to parse.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from handlers.errors import InvalidInput, NotAcceptable, UnsupportedMediaType

#: The longest Content-Type or Accept SageMaker's InvokeEndpoint takes.
MAX_HEADER_CHARS = 1024


def choose_content_type(header: str, supported: Collection[str] | None) -> str:
    """The bare media type of a Content-Type ``header`` if the handler takes it (``None``:
    takes any), or 415."""
    _check_length("Content-Type", header)
    media_type = bare_media_type(header)
    if media_type and (supported is None or media_type in supported):
        return media_type
    sent = f"Content-Type {media_type}" if media_type else "no Content-Type"
    offer = f"send one of {', '.join(sorted(supported))}" if supported else "send a Content-Type"
    raise UnsupportedMediaType(f"{sent} is not supported; {offer}")


def choose_accept(header: str, offers: tuple[str, ...] | None, default: str) -> str:
    """The response type an Accept ``header`` prefers among ``offers`` (ties go to
    ``default``), or 406. With ``offers`` ``None`` the handler writes any type: the client's
    most preferred type is chosen.
    """
    _check_length("Accept", header)
    chosen = negotiate(header, offers, default)
    if chosen is None:
        available = "any type with a quality above 0" if offers is None else ", ".join(offers)
        raise NotAcceptable(
            f"cannot answer in any type of Accept {header!r}; available: {available}"
        )
    return chosen


def _check_length(name: str, header: str) -> None:
    if len(header) > MAX_HEADER_CHARS:
        raise InvalidInput(
            f"the {name} header is {len(header)} characters long; at most {MAX_HEADER_CHARS} "
            "are accepted (SageMaker's own limit)"
        )


@lru_cache(maxsize=1024)
def bare_media_type(header: str) -> str:
    """``header`` without parameters, in lower case ("" for none), as Werkzeug's
    ``Request.mimetype`` reads it."""
    return parse_options_header(header)[0].lower()


@lru_cache(maxsize=1024)
def negotiate(header: str, offers: tuple[str, ...] | None, default: str) -> str | None:
    """The media type to answer ``header`` with, or ``None`` when none is acceptable."""
    accept = _without_parameters(parse_accept_header(header, MIMEAccept))
    if not accept:
        return default
    if offers is None:  # the handler writes any type: pass the client's preference on
        return _preferred(accept, default)
    return accept.best_match([default, *(offer for offer in offers if offer != default)])


def _preferred(accept: MIMEAccept, default: str) -> str | None:
    """The client's most preferred concrete type, unless it prefers ``default`` more; failing
    both, its most preferred wildcard (Werkzeug keeps the values in order of preference)."""
    acceptable = [(value, quality) for value, quality in accept if quality > 0]
    concrete = [(value, quality) for value, quality in acceptable if "*" not in value]
    default_quality = accept.quality(default)
    if concrete and concrete[0][1] >= default_quality:
        return concrete[0][0]
    if default_quality > 0:
        return default
    return acceptable[0][0] if acceptable else None


def _without_parameters(accept: MIMEAccept) -> MIMEAccept:
    """``accept`` with media-type parameters dropped (q-values kept).

    Werkzeug only matches ``application/json; charset=utf-8`` to an offer with the same
    parameters; every encoder here writes UTF-8 or binary, so parameters cannot make an offer
    unacceptable.
    """
    return MIMEAccept([(parse_options_header(value)[0], quality) for value, quality in accept])
