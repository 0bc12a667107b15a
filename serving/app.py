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
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from werkzeug.sansio.utils import get_content_length
from werkzeug.wsgi import wrap_file

from handlers import Handler, HandlerConfig, InvocationContext, load_handler_class
from handlers.base import CUSTOM_ATTRIBUTES, Encoded
from handlers.codecs import CodecPluginError, CodecRegistry, installed_codecs
from handlers.errors import ModelLoadError, NotReady, ServingError
from handlers.records import Answers, RecordChunks, answers_in_chunks, line_chunks
from handlers.tensors import MAX_EXPANDED_BYTES, MAX_ROWS

from .admission import BodyMemory, FairGate
from .body import BodyLimits, RequestBody
from .deadline import deadline
from .execution import GeventExecutor
from .headers import RequestHeaders, ResponseFields, sendable, unsendable_attributes
from .negotiation import choose_accept, choose_content_type
from .settings import Settings, SettingsError
from .startup import check_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .model_store import SharedStore
    from .models_api import ModelsApi

log = logging.getLogger(__name__)

HandlerFactory = Callable[[], Handler]
Invoke = Callable[[bytes, InvocationContext], Encoded]

#: X-Amzn-SageMaker-Custom-Attributes, as WSGI names request headers.
CUSTOM_ATTRIBUTES_KEY = "HTTP_" + CUSTOM_ATTRIBUTES.upper().replace("-", "_")

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
    )
    max_decoded_bytes, max_rows = decode_limits(settings)
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
        max_decoded_bytes=max_decoded_bytes,
        max_rows=max_rows,
    )


def decode_limits(settings: Settings) -> tuple[int, int]:
    """The most bytes of arrays and rows one body may decode to: ``SERVING_MAX_DECODED_MB``
    and ``SERVING_MAX_ROWS``, or by default 16 times the body limit and a row per 16 bytes
    of it (96 MiB and 393,216 rows for 6 MiB)."""
    limit = settings.max_payload_bytes
    max_bytes = int(settings.max_decoded_mb * 1024 * 1024)
    if not max_bytes:
        max_bytes = DECODED_SIZE_FACTOR * limit if limit is not None else MAX_EXPANDED_BYTES
    # A row per 16 bytes: RecordIO records of a number or a few (28 to 40 bytes, which batch
    # transform packs 100 MB bodies with) stay under it, and CSV and JSON Lines, denser, are
    # answered in chunks, each held to it; while a compressed .npz, empty JSON arrays or a
    # .npy of shape (N, 0) stand for any number of rows. The 6.2 million rows of a 100 KB .npz
    # cost 3.2 µs and 42 bytes of answer each: 393,216 rows cost about 1.3 s and 16 MB.
    max_rows = settings.max_rows or (limit // 16 if limit is not None else MAX_ROWS)
    return max_bytes, max_rows


class ModelState:
    """This worker's handler: absent until :meth:`load` has run, which only a worker does."""

    def __init__(self, make_handler: HandlerFactory, default_accept: str) -> None:
        self._make_handler = make_handler
        self._default_accept = default_accept
        self.handler: Handler | None = None
        #: The handler's media types, asked once after it loaded (``None``: any).
        self.content_types: frozenset[str] | None = None
        self.accept_types: tuple[str, ...] | None = None
        #: Its own admission (a multi-model endpoint's models each have one, so that one
        #: model's burst queues behind itself alone); ``None``: the app's.
        self.gate: FairGate | None = None

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
    """One request as the views see it: its WSGI environ and, once negotiated, its context
    and body."""

    environ: WSGIEnvironment
    context: InvocationContext | None = None
    body: RequestBody | None = None

    def custom_attributes(self) -> object:
        """What to echo: the handler's value once it has a context (whatever it set), else
        the request's."""
        if self.context is not None:
            return self.context.custom_attributes
        value: str | None = self.environ.get(CUSTOM_ATTRIBUTES_KEY)
        return value


View = Callable[[Call], Reply]


class ServingApp:
    """The WSGI application for one worker's model (see :func:`create_app`)."""

    def __init__(
        self, settings: Settings, state: ModelState, executor: GeventExecutor | None = None
    ) -> None:
        self.settings = settings
        self.state = state
        #: The handler's executor, when the app made it: whether runs can start is health.
        self.executor = executor
        #: A multi-model endpoint's routes under /models (``state`` then holds no model).
        self.models_api: ModelsApi | None = None
        self._body_limits = BodyLimits(
            settings.max_payload_bytes,
            too_large=f"request body is larger than the {settings.max_payload_mb:g} MiB limit "
            "(SAGEMAKER_MAX_PAYLOAD_IN_MB)",
            stall=settings.body_timeout,
            stalled=f"the request body made no progress for {settings.body_timeout:g} s "
            "(SERVING_BODY_TIMEOUT)",
        )
        self._bodies = BodyMemory(int(settings.max_buffered_mb * 1024 * 1024))
        self._timed_out = (
            f"the request did not complete within {settings.timeout} s "
            "(SAGEMAKER_MODEL_SERVER_TIMEOUT)"
        )
        self._active_requests = self.new_gate()
        self._chunk_bytes = max(1, int(settings.record_chunk_mb * 1024 * 1024))
        self._placeholders = settings.bad_records == "placeholder"
        self._spool_bytes = int(settings.record_spool_mb * 1024 * 1024)
        self._parameters = orjson.dumps(settings.execution_parameters())
        self._response_fields = ResponseFields()
        self._routes: dict[str, dict[str, View]] = {
            "/ping": {"GET": self.ping, "HEAD": self.ping},
            "/invocations": {"POST": self.invocations},
            "/execution-parameters": {
                "GET": self.execution_parameters,
                "HEAD": self.execution_parameters,
            },
        }

    def new_gate(self) -> FairGate:
        """An admission gate for one model: ``SERVING_MAX_ACTIVE_REQUESTS`` and
        ``SERVING_MAX_ACTIVE_MB``."""
        settings = self.settings
        return FairGate(
            settings.max_active_requests or 1, int(settings.max_active_mb * 1024 * 1024)
        )

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
        echoed = call.custom_attributes()
        if not (echoed is None or sendable(echoed)):
            if hasattr(reply.body, "close"):  # a spooled answer's file
                reply.body.close()
            handler = type(self.state.handler).__name__
            reply, echoed = _serving_error(unsendable_attributes(handler, echoed)), None
        headers = [("Content-Type", reply.content_type), *reply.headers]
        if call.body is not None and call.body.failed:
            # The rest of the body is unknown: what follows on the connection is no request.
            headers.append(("Connection", "close"))
        if isinstance(reply.body, bytes):
            headers.append(("Content-Length", str(len(reply.body))))
            body: Iterable[bytes] = (reply.body,)
        else:
            if reply.length is not None:
                headers.append(("Content-Length", str(reply.length)))
            body = reply.body
        if echoed is not None:
            headers.append((CUSTOM_ATTRIBUTES, echoed))
        status_line = STATUS_LINES.get(reply.status) or f"{reply.status} Unknown"
        start_response(status_line, headers)
        # HEAD: the headers GET would have, no body (gunicorn warns of each body it drops).
        return () if environ["REQUEST_METHOD"] == "HEAD" else body

    def _route(self, call: Call) -> Reply:
        path, method = call.environ["PATH_INFO"], call.environ["REQUEST_METHOD"]
        views = self._routes.get(path)
        if views is None and self.models_api is not None:
            views = self.models_api.views(path)
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
        if self.state.handler is None and not (
            self.models_api is not None and self.models_api.registry.started
        ):
            raise NotReady("the model is not loaded")
        if self.executor is not None and not self.executor.can_serve:
            raise NotReady("model runs are stuck past the timeout; this worker is being replaced")
        return Reply(HTTPStatus.OK)

    def execution_parameters(self, call: Call) -> Reply:
        return Reply(HTTPStatus.OK, self._parameters, JSON)

    def invocations(self, call: Call) -> Reply:
        return self.invoke(call, self.state)

    def invoke(self, call: Call, state: ModelState) -> Reply:
        """What ``POST /invocations`` answers, for the model in ``state``."""
        environ = call.environ
        handler = state.handler
        if handler is None:
            raise NotReady("the model is not loaded")
        gate = state.gate or self._active_requests
        call.context = context = InvocationContext(
            content_type=choose_content_type(environ.get("CONTENT_TYPE", ""), state.content_types),
            accept=choose_accept(
                environ.get("HTTP_ACCEPT", ""), state.accept_types, self.settings.default_accept
            ),
            custom_attributes=environ.get(CUSTOM_ATTRIBUTES_KEY),
            request_headers=RequestHeaders(environ),
        )
        declared = get_content_length(
            environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING")
        )
        with (
            deadline(self.settings.timeout, self._timed_out),
            self._bodies.holding(state) as holding,
        ):
            call.body = body = RequestBody(
                environ["wsgi.input"],
                declared,
                self._body_limits,
                holding,
                environ.get("gunicorn.socket"),
            )
            if answers_in_chunks(handler, context):
                answerer = RecordChunks(
                    handler,
                    context,
                    placeholders=self._placeholders,
                    spool_bytes=self._spool_bytes,
                    invoke=self._admitted(handler.invoke, gate),
                )
                answers = answerer.answer(line_chunks(body.read, self._chunk_bytes))
                try:
                    status, headers = self._response_fields.of(type(handler).__name__, context)
                except ServingError:
                    if not isinstance(spooled := answers.body(), list):
                        spooled.close()
                    raise
                return _answers_reply(environ, answers, status, headers)
            # Received before admission: a client's slow body holds its own memory, never
            # the turn of requests whose bodies are in.
            data = body.whole()
            result = self._admitted(handler.invoke, gate)(data, context)
        status, headers = self._response_fields.of(type(handler).__name__, context)
        # Sent as the handler named it: pipelines pass the type on to the next container.
        return Reply(status, result.body, result.media_type, headers=headers)

    def _admitted(self, invoke: Invoke, gate: FairGate) -> Invoke:
        """``invoke`` once admitted: the rest wait here, leaving the event loop to /ping and to
        earlier requests."""

        def admitted(body: bytes, context: InvocationContext) -> Encoded:
            with gate.admit(len(body)):
                return invoke(body, context)

        return admitted


def create_app(
    settings: Settings,
    *,
    make_handler: HandlerFactory | None = None,
    codecs: CodecRegistry | None = None,
    worker_index: int = 0,
    store: SharedStore | None = None,
) -> ServingApp:
    """The WSGI app for ``settings``; the model is loaded later by :func:`load_model`.

    ``make_handler`` builds the handler (by default the one the settings name, imported only
    when called); ``codecs`` defaults to the built-in codecs plus installed plugins;
    ``worker_index`` spreads workers across GPUs; ``store`` is what a multi-model server's
    workers share (see :mod:`serving.model_store`). Raises
    :class:`SettingsError` for an unknown handler name or a broken codec plugin.
    """
    if codecs is None:
        try:
            max_bytes, max_rows = decode_limits(settings)
            codecs = installed_codecs(max_bytes, settings.codec_plugins, max_rows=max_rows)
        except CodecPluginError as exc:
            raise SettingsError(str(exc)) from None
    executor = None
    if settings.multi_model and store is not None:
        return _multi_model_app(settings, codecs, worker_index, store)
    if make_handler is None:
        name = check_settings(settings)
        config = handler_config(settings, codecs, worker_index)
        make_handler = lambda: load_handler_class(name)(config)  # noqa: E731
        if isinstance(config.executor, GeventExecutor):
            executor = config.executor
    return ServingApp(settings, ModelState(make_handler, settings.default_accept), executor)


def _multi_model_app(
    settings: Settings, codecs: CodecRegistry, worker_index: int, store: SharedStore
) -> ServingApp:
    """An app with no model of its own, serving the models loaded through ``/models``: each
    with its own handler and admission, all on the worker's one executor."""
    from . import model_requirements
    from .models_api import ModelsApi
    from .multimodel import ModelRegistry

    config = handler_config(settings, codecs, worker_index)

    def make_state(model_dir: Path) -> ModelState:
        code_dir = model_dir / "code"
        name = check_settings(replace(settings, model_dir=model_dir, code_dir=code_dir))
        if settings.install_requirements and name != "onnx":
            model_requirements.check(code_dir)
        handler_class = load_handler_class(name)
        model_config = replace(config, model_dir=model_dir, code_dir=code_dir)
        state = ModelState(lambda: handler_class(model_config), settings.default_accept)
        state.gate = app.new_gate()  # a burst on one model queues behind itself alone
        return state

    def no_model() -> Handler:
        raise ModelLoadError("a multi-model endpoint loads its models through POST /models")

    executor = config.executor if isinstance(config.executor, GeventExecutor) else None
    app = ServingApp(settings, ModelState(no_model, settings.default_accept), executor)
    registry = ModelRegistry(settings, store, make_state, executor)
    app.models_api = ModelsApi(registry, app.invoke, settings.body_timeout)
    # A 404, as for a model not loaded: no model is /invocations' (a 503 would say "retry").
    app._routes["/invocations"] = {"POST": lambda call: error_reply(HTTPStatus.NOT_FOUND, NO_MODEL)}
    return app


#: What ``POST /invocations`` answers on a multi-model endpoint.
NO_MODEL = "this is a multi-model endpoint: invoke a model with POST /models/<model name>/invoke"


def load_model(app: ServingApp) -> None:
    """Build and load the app's handler (in a worker, after fork); ``/ping`` then says 200.
    A multi-model endpoint's worker loads what the other workers have loaded."""
    if app.models_api is not None:
        app.models_api.registry.start()
    else:
        app.state.load()


def error_reply(status: int, message: str) -> Reply:
    """Every error's response: the status and ``{"error": message}``."""
    return Reply(status, orjson.dumps({"error": message}), JSON)


def _serving_error(exc: ServingError) -> Reply:
    if isinstance(exc, NotReady):  # answered to every ping meanwhile; its cause was logged once
        log.info("503 %s", exc.message)
    elif exc.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        log.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__)
    else:  # the client's mistake: no stack trace
        log.info("%d %s: %s", exc.status, type(exc).__name__, exc.message)
    return error_reply(exc.status, exc.message)


def _answers_reply(
    environ: WSGIEnvironment,
    answers: Answers,
    status: int = HTTPStatus.OK,
    headers: list[tuple[str, str]] | None = None,
) -> Reply:
    """Parts from memory, or the spooled file (read in blocks of 1 MiB, closed after sending)."""
    body = answers.body()
    parts: Iterable[bytes] = (
        body if isinstance(body, list) else wrap_file(environ, body, buffer_size=1 << 20)
    )
    return Reply(status, parts, answers.media_type, answers.length, headers or [])
