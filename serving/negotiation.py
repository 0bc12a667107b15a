"""Content-Type and Accept against the codec registry, decided before any decoding.

Werkzeug parses the headers: parameters (``; charset=utf-8``, ignored), Accept lists,
q-values, ``type/*`` and ``*/*``. A request without Accept, or one that accepts anything, gets the
configured default response type.
"""

from __future__ import annotations

from flask import Request
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_options_header

from handlers.codecs import CodecRegistry, Decoder, Encoder
from handlers.errors import NotAcceptable, UnsupportedMediaType


def choose_decoder(request: Request, codecs: CodecRegistry) -> Decoder:
    """The decoder for the request's Content-Type, or 415."""
    media_type = request.mimetype  # bare and lower-case; "" when the header is missing
    decoder = codecs.decoder(media_type) if media_type else None
    if decoder is None:
        sent = f"Content-Type {media_type}" if media_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"{sent} is not supported; send one of {', '.join(codecs.decodable)}"
        )
    return decoder


def choose_encoder(request: Request, codecs: CodecRegistry, default: str) -> Encoder:
    """The encoder the request's Accept prefers (ties go to ``default``), or 406."""
    offers = [default, *(media_type for media_type in codecs.encodable if media_type != default)]
    accept = _without_parameters(request.accept_mimetypes)
    chosen = accept.best_match(offers) if accept else default
    encoder = codecs.encoder(chosen) if chosen else None
    if encoder is None:
        raise NotAcceptable(
            f"cannot answer in any type of Accept {request.headers.get('Accept', '')!r}; "
            f"available: {', '.join(offers)}"
        )
    return encoder


def _without_parameters(accept: MIMEAccept) -> MIMEAccept:
    """``accept`` with media-type parameters dropped (q-values kept).

    Werkzeug only matches ``application/json; charset=utf-8`` to an offer with the same
    parameters; every encoder here writes UTF-8 or binary, so parameters cannot make an offer
    unacceptable.
    """
    return MIMEAccept([(parse_options_header(value)[0], quality) for value, quality in accept])
