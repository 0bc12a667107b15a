"""The Flask app: ``GET /ping`` and ``POST /invocations``, and the one place errors become
responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import IO

import orjson
from flask import Flask, Response, g, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import wrap_file

from handlers import Handler, HandlerConfig, InvocationContext, load_handler_class
from handlers.base import CUSTOM_ATTRIBUTES
from handlers.codecs import CodecPluginError, CodecRegistry, installed_codecs
from handlers.codecs.numpy_codecs import MAX_NPZ_EXPANDED_BYTES
from handlers.errors import InvalidInput, ModelLoadError, NotReady, PayloadTooLarge, ServingError
from handlers.records import Answers, RecordChunks, answers_in_chunks, line_chunks

from .admission import FairGate
from .execution import GeventExecutor
from .negotiation import choose_accept, choose_content_type
from .settings import Settings, SettingsError
from .startup import check_settings

log = logging.getLogger(__name__)

HandlerFactory = Callable[[], Handler]


def handler_config(
    settings: Settings, codecs: CodecRegistry, worker_index: int = 0
) -> HandlerConfig:
    executor = GeventExecutor(
        concurrency=settings.inference_concurrency,
        max_batch_rows=settings.max_batch_size,
        max_delay=settings.max_batch_delay_ms / 1000,
        timeout=settings.timeout,
    )
    return HandlerConfig(
        model_dir=settings.model_dir,
        model_file=settings.model_file,
        providers=settings.providers,
        allow_cpu_fallback=settings.allow_cpu_fallback,
        worker_index=worker_index,
        threads=settings.inference_threads,
        code_dir=settings.code_dir,
        program=settings.program,
        codecs=codecs,
        executor=executor,
    )


#: What a chunked body (no Content-Length) counts for in admission, in bytes.
UNKNOWN_BODY_WEIGHT = 1 << 20

#: What one body may decode to, as a multiple of the body limit (bounds compressed .npz).
DECODED_SIZE_FACTOR = 16


def decoded_size_limit(settings: Settings) -> int:
    limit = settings.max_payload_bytes
    return DECODED_SIZE_FACTOR * limit if limit is not None else MAX_NPZ_EXPANDED_BYTES


class ModelState:
    """This worker's handler: absent until :meth:`load` has run, which only a worker does."""

    def __init__(self, make_handler: HandlerFactory, default_accept: str) -> None:
        self._make_handler = make_handler
        self._default_accept = default_accept
        self.handler: Handler | None = None
        #: The handler's media types, asked once after it loaded (``None``: any).
        self.content_types: frozenset[str] | None = None
        self.accept_types: tuple[str, ...] | None = None

    def load(self) -> None:
        handler = self._make_handler()
        handler.load()
        takes, offers = handler.content_types(), handler.accept_types()
        if offers is not None and self._default_accept not in offers:
            raise ModelLoadError(
                f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={self._default_accept!r} cannot be "
                f"written by this handler; it writes {', '.join(offers)}"
            )
        self.content_types = None if takes is None else frozenset(takes)
        self.accept_types = None if offers is None else tuple(offers)
        self.handler = handler
        log.info("%s ready", type(handler).__name__)


def create_app(
    settings: Settings,
    *,
    make_handler: HandlerFactory | None = None,
    codecs: CodecRegistry | None = None,
    worker_index: int = 0,
) -> Flask:
    """The WSGI app for ``settings``; the model is loaded later by :func:`load_model`.

    ``make_handler`` builds the handler (by default the one the settings name, imported only
    when called); ``codecs`` defaults to the built-in codecs plus installed plugins;
    ``worker_index`` spreads workers across GPUs. Raises
    :class:`SettingsError` for an unknown handler name or a broken codec plugin.
    """
    if codecs is None:
        try:
            codecs = installed_codecs(decoded_size_limit(settings), settings.codec_plugins)
        except CodecPluginError as exc:
            raise SettingsError(str(exc)) from None
    if make_handler is None:
        name = check_settings(settings)
        config = handler_config(settings, codecs, worker_index)
        make_handler = lambda: load_handler_class(name)(config)  # noqa: E731

    app = Flask("serving")
    body_limit = settings.max_payload_bytes
    state = ModelState(make_handler, settings.default_accept)
    active_requests = FairGate(
        settings.max_active_requests or 1, int(settings.max_active_mb * 1024 * 1024)
    )
    app.extensions["serving"] = state
    chunk_bytes = max(1, int(settings.record_chunk_mb * 1024 * 1024))
    placeholders = settings.bad_records == "placeholder"
    spool_bytes = int(settings.record_spool_mb * 1024 * 1024)

    @app.get("/ping")
    def ping() -> Response:
        if state.handler is None:
            raise NotReady("the model is not loaded")
        return Response(status=HTTPStatus.OK, content_type="text/plain")

    @app.get("/execution-parameters")
    def execution_parameters() -> Response:
        return Response(
            orjson.dumps(settings.execution_parameters()), content_type="application/json"
        )

    @app.post("/invocations")
    def invocations() -> Response:
        handler = state.handler
        if handler is None:
            raise NotReady("the model is not loaded")
        content_type = choose_content_type(request, state.content_types)
        accept = choose_accept(request, state.accept_types, settings.default_accept)
        g.context = context = InvocationContext(
            content_type=content_type,
            accept=accept,
            custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES),
        )
        # The rest wait here, unread, leaving the event loop to /ping and to earlier requests.
        weight = request.content_length or UNKNOWN_BODY_WEIGHT
        with active_requests.admit(weight):
            if answers_in_chunks(handler, context):
                chunks = line_chunks(_body_reader(settings, body_limit), chunk_bytes)
                answerer = RecordChunks(
                    handler, context, placeholders=placeholders, spool_bytes=spool_bytes
                )
                return _answers_response(answerer.answer(chunks))
            result = handler.invoke(_read_body(settings, body_limit), context)
        # content_type, not mimetype: Flask would append "; charset=utf-8" to text types and
        # pipelines pass the response type on to the next container verbatim.
        return Response(result.body, content_type=result.media_type)

    _install_error_handlers(app)
    app.after_request(_echo_custom_attributes)
    return app


def load_model(app: Flask) -> None:
    """Build and load the app's handler (in a worker, after fork); ``/ping`` then says 200."""
    state: ModelState = app.extensions["serving"]
    state.load()


def _read_body(settings: Settings, limit: int | None) -> bytes:
    """The whole body (see :func:`_body_reader`)."""
    return _body_reader(settings, limit)(-1 if limit is None else limit + 1)


def _answers_response(answers: Answers) -> Response:
    """Parts from memory, or the spooled file (sent with sendfile, closed after sending)."""
    body = answers.body()
    if isinstance(body, list):
        return Response(body, content_type=answers.media_type)
    response = Response(
        wrap_file(request.environ, body, buffer_size=1 << 20),
        content_type=answers.media_type,
        direct_passthrough=True,
    )
    response.content_length = answers.length
    return response


def _body_reader(settings: Settings, limit: int | None) -> Callable[[int], bytes]:
    """``read(n)``: up to ``n`` more bytes of the body (-1: all), read straight from the
    server's stream (no copies through Werkzeug's limited stream, which costs a third of a
    small model's request for a 0.6 MB body).

    A Content-Length over the limit is refused before reading; a chunked body is refused once
    it has passed the limit, which is how an oversize one shows itself; a body shorter than
    its Content-Length, or empty, is refused too.
    """
    declared = request.content_length
    if declared is not None and limit is not None and declared > limit:
        raise _too_large(settings)
    stream = request.stream
    total = 0

    def read(size: int) -> bytes:
        nonlocal total
        if declared is not None:
            size = declared - total if size < 0 else min(size, declared - total)
        data = _read(stream, size) if size else b""
        total += len(data)
        if limit is not None and total > limit:
            raise _too_large(settings)
        if declared is not None and len(data) < size:
            raise InvalidInput(f"request body ended after {total} of its {declared} bytes")
        if not total:
            raise InvalidInput("the request body is empty")
        return data

    return read


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than the {settings.max_payload_mb:g} MiB limit "
        "(SAGEMAKER_MAX_PAYLOAD_IN_MB)"
    )


def _read(stream: IO[bytes], wanted: int) -> bytes:
    """Up to ``wanted`` bytes (all, for -1), however many reads the stream needs."""
    try:
        if wanted < 0:
            return stream.read()
        chunks = []
        while wanted > 0 and (chunk := stream.read(wanted)):
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)
    except ParseException as exc:  # gunicorn's, for broken chunked framing
        raise InvalidInput(f"malformed chunked request body: {type(exc).__name__} {exc}") from exc


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
