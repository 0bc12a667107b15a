"""The server's routes in front of an existing Flask app (``pip install '...[flask]'``).

:class:`FlaskMount` is a WSGI app that sends ``/ping``, ``/invocations`` and
``/execution-parameters`` (and a multi-model endpoint's ``/models``) to the server's own app
(:class:`serving.app.ServingApp`: negotiation, codecs, handler, errors, admission, timeouts)
and every other path to the user's Flask app, which serves its own routes as it always did.
Our routes never enter Flask: no request context, URL map or ``before_request`` hooks, so they
cost what they cost without Flask (its per-request machinery is 0.1 ms, as much as the rest
of a small model's request). Without a Flask app the server runs no dispatcher at all.

Two ways in:

* ``serving serve --flask-app package.module:app`` (``SERVING_FLASK_APP``): each worker
  imports the app after fork and serves it behind :class:`FlaskMount`; the model loads in
  ``post_worker_init`` as always, and ``/ping`` stays 503 until it has.
* your own gunicorn: ``application = mount(app)`` in a module you name to gunicorn, with
  ``worker_class = "serving.worker.ServingGeventWorker"`` and
  ``from serving.flask_integration import post_worker_init`` in its config file.

Nothing here imports Flask: the app is any WSGI app, and this module only dispatches.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .app import ServingApp
    from .settings import Settings

log = logging.getLogger(__name__)

#: The paths the server answers itself, whatever the Flask app has.
SERVER_PATHS = frozenset({"/ping", "/invocations", "/execution-parameters"})

_APP_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def app_name(text: str) -> str | None:
    """``SERVING_FLASK_APP``'s parser: ``package.module:attribute``, or empty for none."""
    value = text.strip()
    if value and not _APP_NAME.fullmatch(value):
        raise ValueError("not a module:attribute path such as package.module:app")
    return value or None


class FlaskMount:
    """The server's routes answered by ``serving_app``, every other path by ``flask_app`` (a
    Flask app, or any WSGI app).

    Attributes it lacks are ``serving_app``'s (``state``, ``executor``, ``models_api``), so
    the worker loads the model and watches its runs through it as through the plain app.
    """

    def __init__(self, serving_app: ServingApp, flask_app: WSGIApplication) -> None:
        self.serving_app = serving_app
        self.flask_app = flask_app
        url_map = getattr(flask_app, "url_map", None)  # a Flask app's routes
        for rule in url_map.iter_rules() if url_map is not None else ():
            if rule.rule in SERVER_PATHS:
                log.warning(
                    "the Flask app's route %s (%s) is never called: the server answers that "
                    "path itself",
                    rule.rule,
                    rule.endpoint,
                )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ["PATH_INFO"]
        if path in SERVER_PATHS or (  # and a multi-model endpoint's API (serving/models_api.py)
            self.serving_app.models_api is not None
            and (path == "/models" or path.startswith("/models/"))
        ):
            return self.serving_app(environ, start_response)
        return self._flask(environ, start_response)

    def _flask(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "CONTENT_LENGTH" in environ:
            # Werkzeug reads a body its server calls terminated with a single read(), and the
            # worker's bodies give at most 16 MiB a read: without the key it reads to the
            # Content-Length (and a body cut short is a 400, not a truncated one).
            environ.pop("wsgi.input_terminated", None)
        method = environ["REQUEST_METHOD"]

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Any:
            if _unframed(method, status, headers):
                # A streamed body: the worker's HTTP/1.1 loop sends it as it comes, without
                # chunked encoding, so the connection's end is what marks the body's end.
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.flask_app(environ, start)

    def __getattr__(self, name: str) -> Any:
        if name == "serving_app":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.serving_app, name)


def _unframed(method: str, status: str, headers: list[tuple[str, str]]) -> bool:
    """Whether a response has a body of unknown length."""
    if method == "HEAD" or status[:3] in ("204", "304") or status.startswith("1"):
        return False
    return not any(name.lower() == "content-length" for name, _ in headers)


def import_app(name: str) -> WSGIApplication:
    """The WSGI app ``package.module:attribute`` names, imported (in a worker, after fork);
    :class:`~serving.settings.SettingsError` naming ``SERVING_FLASK_APP`` if it cannot be."""
    from .settings import SettingsError

    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"SERVING_FLASK_APP={name!r} cannot be imported: {exc}") from exc
    app = getattr(module, attribute, None)
    if app is None:
        raise SettingsError(f"SERVING_FLASK_APP={name!r}: {module_name} has no {attribute!r}")
    if not callable(app):
        raise SettingsError(
            f"SERVING_FLASK_APP={name!r} is a {type(app).__name__}, not a Flask (WSGI) app"
        )
    wsgi_app: WSGIApplication = app
    return wsgi_app


def mount(flask_app: WSGIApplication, settings: Settings | None = None) -> FlaskMount:
    """``flask_app`` behind the server's routes, for a gunicorn you run yourself: the server's
    app is built for ``settings`` (by default from the environment, as ``serving serve``
    reads it), its model loaded by :func:`post_worker_init`. Raises
    :class:`~serving.settings.SettingsError` for invalid settings."""
    from .app import create_app
    from .settings import Settings

    if settings is None:
        settings = Settings.from_sources(os.environ)
    return FlaskMount(create_app(settings), flask_app)


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook (import it into your gunicorn config file): load the model of the app
    :func:`mount` made, in each worker after fork. A model that cannot load ends the worker
    with gunicorn's boot-error status, which stops the server, as ``serving serve`` does."""
    from gunicorn.arbiter import Arbiter

    from .app import load_model

    try:
        load_model(worker.wsgi)
    except Exception:
        log.exception("cannot load the model")
        sys.exit(Arbiter.WORKER_BOOT_ERROR)
    gc.collect()  # as serving serve: the model's objects are never walked again
    gc.freeze()
