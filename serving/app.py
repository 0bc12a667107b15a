"""The WSGI app: ``GET /ping``, ``POST /invocations`` and ``GET /execution-parameters``, and
the one place errors become responses.

Plain WSGI, with Werkzeug parsing the headers, rather than Flask: three fixed routes need no
router, and Flask's per-request machinery (request context, URL adapter, response object and
its processing) cost 0.1 ms of CPU per request, as much as everything else this app and the
model do for a small model together (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson
from werkzeug.sansio.utils import get_content_length
from werkzeug.wsgi import wrap_file

from handlers import Handler, HandlerConfig, InvocationContext, load_handler_class
from handlers.base import CUSTOM_ATTRIBUTES
from handlers.codecs import CodecPluginError, CodecRegistry, installed_codecs
from handlers.errors import ModelLoadError, NotReady, ServingError
from handlers.records import Answers, RecordChunks, answers_in_chunks, line_chunks
from handlers.tensors import MAX_EXPANDED_BYTES

from .admission import FairGate
from .body import body_reader, read_whole
from .execution import GeventExecutor
from .negotiation import choose_accept, choose_content_type
from .settings import Settings, SettingsError
from .startup import check_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

HandlerFactory = Callable[[], Handler]

#: X-Amzn-SageMaker-Custom-Attributes, as WSGI names request headers.
CUSTOM_ATTRIBUTES_KEY = "HTTP_" + CUSTOM_ATTRIBUTES.upper().replace("-", "_")

#: What a chunked body (no Content-Length) counts for in admission, in bytes.
UNKNOWN_BODY_WEIGHT = 1 << 20

#: What one body may decode to, as a multiple of the body limit (bounds compressed .npz).
DECODED_SIZE_FACTOR = 16

#: Status lines by code, e.g. ``"200 OK"``.
STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}

JSON = "application/json"


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


def decoded_size_limit(settings: Settings) -> int:
    limit = settings.max_payload_bytes
    return DECODED_SIZE_FACTOR * limit if limit is not None else MAX_EXPANDED_BYTES


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


@dataclass
class Reply:
    """A response: status, body (bytes, or parts of known total ``length``), headers."""

    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/plain"
    length: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Call:
    """One request as the views see it: its WSGI environ and, once negotiated, its context."""

    environ: WSGIEnvironment
    context: InvocationContext | None = None

    def custom_attributes(self) -> str | None:
        """What to echo: the handler's value once it has a context, else the request's."""
        if self.context is not None:
            return self.context.custom_attributes
        value: str | None = self.environ.get(CUSTOM_ATTRIBUTES_KEY)
        return value


View = Callable[[Call], Reply]


class ServingApp:
    """The WSGI application for one worker's model (see :func:`create_app`)."""

    def __init__(self, settings: Settings, state: ModelState) -> None:
        self.settings = settings
        self.state = state
        self._body_limit = settings.max_payload_bytes
        self._too_large = (
            f"request body is larger than the {settings.max_payload_mb:g} MiB limit "
            "(SAGEMAKER_MAX_PAYLOAD_IN_MB)"
        )
        self._active_requests = FairGate(
            settings.max_active_requests or 1, int(settings.max_active_mb * 1024 * 1024)
        )
        self._chunk_bytes = max(1, int(settings.record_chunk_mb * 1024 * 1024))
        self._placeholders = settings.bad_records == "placeholder"
        self._spool_bytes = int(settings.record_spool_mb * 1024 * 1024)
        self._parameters = orjson.dumps(settings.execution_parameters())
        self._routes: dict[str, dict[str, View]] = {
            "/ping": {"GET": self.ping, "HEAD": self.ping},
            "/invocations": {"POST": self.invocations},
            "/execution-parameters": {
                "GET": self.execution_parameters,
                "HEAD": self.execution_parameters,
            },
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        call = Call(environ)
        try:
            reply = self._route(call)
        except ServingError as exc:
            reply = _serving_error(exc)
        except Exception:
            method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
            log.exception("unexpected error in %s %s", method, path)
            reply = error_reply(HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error")
        headers = [("Content-Type", reply.content_type), *reply.headers]
        if isinstance(reply.body, bytes):
            headers.append(("Content-Length", str(len(reply.body))))
            body: Iterable[bytes] = (reply.body,)
        else:
            if reply.length is not None:
                headers.append(("Content-Length", str(reply.length)))
            body = reply.body
        echoed = call.custom_attributes()
        if echoed is not None:
            headers.append((CUSTOM_ATTRIBUTES, echoed))
        status_line = STATUS_LINES.get(reply.status) or f"{reply.status} Unknown"
        start_response(status_line, headers)
        # HEAD: the headers GET would have, no body (gunicorn warns of each body it drops).
        return () if environ["REQUEST_METHOD"] == "HEAD" else body

    def _route(self, call: Call) -> Reply:
        path, method = call.environ["PATH_INFO"], call.environ["REQUEST_METHOD"]
        views = self._routes.get(path)
        if views is None:
            return error_reply(HTTPStatus.NOT_FOUND, f"404 Not Found: {method} {path}")
        view = views.get(method)
        if view is None:
            reply = error_reply(
                HTTPStatus.METHOD_NOT_ALLOWED, f"405 Method Not Allowed: {method} {path}"
            )
            reply.headers.append(("Allow", ", ".join(views)))
            return reply
        return view(call)

    def ping(self, call: Call) -> Reply:
        if self.state.handler is None:
            raise NotReady("the model is not loaded")
        return Reply(HTTPStatus.OK)

    def execution_parameters(self, call: Call) -> Reply:
        return Reply(HTTPStatus.OK, self._parameters, JSON)

    def invocations(self, call: Call) -> Reply:
        state, environ = self.state, call.environ
        handler = state.handler
        if handler is None:
            raise NotReady("the model is not loaded")
        call.context = context = InvocationContext(
            content_type=choose_content_type(environ.get("CONTENT_TYPE", ""), state.content_types),
            accept=choose_accept(
                environ.get("HTTP_ACCEPT", ""), state.accept_types, self.settings.default_accept
            ),
            custom_attributes=environ.get(CUSTOM_ATTRIBUTES_KEY),
        )
        declared = get_content_length(
            environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING")
        )
        # The rest wait here, unread, leaving the event loop to /ping and to earlier requests.
        with self._active_requests.admit(declared or UNKNOWN_BODY_WEIGHT):
            read = body_reader(environ["wsgi.input"], declared, self._body_limit, self._too_large)
            if answers_in_chunks(handler, context):
                answerer = RecordChunks(
                    handler, context, placeholders=self._placeholders, spool_bytes=self._spool_bytes
                )
                answers = answerer.answer(line_chunks(read, self._chunk_bytes))
                return _answers_reply(environ, answers)
            result = handler.invoke(read_whole(read, self._body_limit), context)
        # Sent as the handler named it: pipelines pass the type on to the next container.
        return Reply(HTTPStatus.OK, result.body, result.media_type)


def create_app(
    settings: Settings,
    *,
    make_handler: HandlerFactory | None = None,
    codecs: CodecRegistry | None = None,
    worker_index: int = 0,
) -> ServingApp:
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
    return ServingApp(settings, ModelState(make_handler, settings.default_accept))


def load_model(app: ServingApp) -> None:
    """Build and load the app's handler (in a worker, after fork); ``/ping`` then says 200."""
    app.state.load()


def error_reply(status: int, message: str) -> Reply:
    """Every error's response: the status and ``{"error": message}``."""
    return Reply(status, orjson.dumps({"error": message}), JSON)


def _serving_error(exc: ServingError) -> Reply:
    if exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        log.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__)
    else:  # the client's mistake: no stack trace
        log.info("%d %s: %s", exc.status, type(exc).__name__, exc.message)
    return error_reply(exc.status, exc.message)


def _answers_reply(environ: WSGIEnvironment, answers: Answers) -> Reply:
    """Parts from memory, or the spooled file (read in blocks of 1 MiB, closed after sending)."""
    body = answers.body()
    parts: Iterable[bytes] = (
        body if isinstance(body, list) else wrap_file(environ, body, buffer_size=1 << 20)
    )
    return Reply(HTTPStatus.OK, parts, answers.media_type, answers.length)
