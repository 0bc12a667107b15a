"""The Flask app: ``GET /ping`` and ``POST /invocations``, and the one place errors become
responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from handlers import Handler, HandlerConfig, InvocationContext, load_handler_class
from handlers.codecs import CodecRegistry, default_codecs
from handlers.errors import InvalidInput, NotReady, PayloadTooLarge, ServingError
from handlers.registry import handler_path

from .negotiation import choose_decoder, choose_encoder
from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"

HandlerFactory = Callable[[], Handler]


def handler_config(settings: Settings) -> HandlerConfig:
    return HandlerConfig(
        model_dir=settings.model_dir,
        model_file=settings.model_file,
        providers=settings.providers,
        threads=settings.inference_threads,
    )


class ModelState:
    """This worker's handler: absent until :meth:`load` has run, which only a worker does."""

    def __init__(self, make_handler: HandlerFactory) -> None:
        self._make_handler = make_handler
        self.handler: Handler | None = None

    def load(self) -> None:
        handler = self._make_handler()
        handler.load()
        self.handler = handler


def create_app(
    settings: Settings,
    *,
    make_handler: HandlerFactory | None = None,
    codecs: CodecRegistry | None = None,
) -> Flask:
    """The WSGI app for ``settings``; the model is loaded later by :func:`load_model`.

    ``make_handler`` builds the handler (by default the one ``settings.handler`` names,
    imported only when called); ``codecs`` defaults to the built-in registry. Raises
    :class:`SettingsError` for settings that contradict the registry or handler names.
    """
    codecs = codecs or default_codecs()
    if codecs.encoder(settings.default_accept) is None:
        raise SettingsError(
            f"invalid SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={settings.default_accept!r}: "
            f"no encoder for it; available: {', '.join(codecs.encodable)}"
        )
    if make_handler is None:
        try:
            handler_path(settings.handler)
        except ValueError as exc:
            raise SettingsError(f"invalid SERVING_HANDLER={settings.handler!r}: {exc}") from None
        config = handler_config(settings)
        make_handler = lambda: load_handler_class(settings.handler)(config)  # noqa: E731

    app = Flask("serving")
    # One byte over the limit: Werkzeug stops a chunked body at its maximum without raising,
    # so a body that reaches limit + 1 bytes is how an oversize chunked body shows itself.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes + 1
    state = ModelState(make_handler)
    app.extensions["serving"] = state

    @app.get("/ping")
    def ping() -> Response:
        if state.handler is None:
            raise NotReady("the model is not loaded")
        return Response(status=HTTPStatus.OK)

    @app.post("/invocations")
    def invocations() -> Response:
        handler = state.handler
        if handler is None:
            raise NotReady("the model is not loaded")
        decoder = choose_decoder(request, codecs)
        encoder = choose_encoder(request, codecs, settings.default_accept)
        body = _read_body(settings)
        g.context = context = InvocationContext(
            content_type=decoder.media_type,
            accept=encoder.media_type,
            custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
        )
        result = handler.invoke(body, decoder, encoder, context)
        # content_type, not mimetype: Flask would append "; charset=utf-8" to text types and
        # pipelines pass the response type on to the next container verbatim.
        return Response(result, content_type=encoder.media_type)

    _install_error_handlers(app)
    app.after_request(_echo_custom_attributes)
    return app


def load_model(app: Flask) -> None:
    """Build and load the app's handler (in a worker, after fork); ``/ping`` then says 200."""
    state: ModelState = app.extensions["serving"]
    state.load()


def _read_body(settings: Settings) -> bytes:
    try:
        body: bytes | None = request.get_data(cache=False)
    except RequestEntityTooLarge:  # Content-Length over the limit: nothing was read
        body = None
    if body is None or len(body) > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"request body is larger than the {settings.max_payload_mb:g} MiB limit "
            "(SAGEMAKER_MAX_PAYLOAD_IN_MB)"
        )
    if not body:
        raise InvalidInput("the request body is empty")
    return body


def _echo_custom_attributes(response: Response) -> Response:
    context: InvocationContext | None = g.get("context")
    value = context.custom_attributes if context else request.headers.get(CUSTOM_ATTRIBUTES)
    if value is not None:
        response.headers[CUSTOM_ATTRIBUTES] = value
    return response


def _error_response(status: int, message: str) -> Response:
    return Response(
        orjson.dumps({"error": message}), status=status, content_type="application/json"
    )


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServingError)
    def serving_error(exc: ServingError) -> Response:
        if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            log.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__)
        else:  # the client's mistake: no stack trace
            log.info("%d %s: %s", exc.status, type(exc).__name__, exc.message)
        return _error_response(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or HTTPStatus.INTERNAL_SERVER_ERROR
        return _error_response(status, f"{status} {exc.name}: {request.method} {request.path}")

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")
