"""SageMaker's multi-model API over HTTP: thin glue over :class:`~serving.multimodel.ModelRegistry`.

=====================================  =========================================================
``POST /models``                       load ``{"model_name": ..., "url": ...}``
``GET /models``                        list, ``?max_results=`` (1 to 1000, 100) and
                                       ``?next_page_token=``
``GET /models/<name>``                 describe
``DELETE /models/<name>``              unload
``POST /models/<name>/invoke``         exactly what ``POST /invocations`` does, for that model
=====================================  =========================================================
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import orjson
from werkzeug.sansio.utils import get_content_length

from handlers.errors import InvalidInput

from .app import Call, ModelState, Reply, View
from .body import BodyLimits, RequestBody
from .memory import MIB
from .model_store import Entry
from .multimodel import ModelRegistry

#: The largest load request body.
MAX_LOAD_BODY = 64 * 1024

#: A list's page size by default, and at most (``?max_results=``).
DEFAULT_PAGE, MAX_PAGE = 100, 1000

JSON = "application/json"

Invoke = Callable[[Call, ModelState], Reply]


class ModelsApi:
    """The views under ``/models``, for :class:`~serving.app.ServingApp`'s router."""

    def __init__(self, registry: ModelRegistry, invoke: Invoke, body_timeout: float) -> None:
        self.registry = registry
        self._invoke = invoke
        self._load_limits = BodyLimits(
            MAX_LOAD_BODY,
            too_large=f"a load request body is {MAX_LOAD_BODY} bytes at most",
            stall=body_timeout,
        )

    def views(self, path: str) -> dict[str, View] | None:
        """The views of ``path`` by method, or ``None`` if it is no models path."""
        parts = path.split("/")
        if len(parts) < 2 or parts[1] != "models" or parts[0]:
            return None
        if len(parts) == 2:
            return {"GET": self.list, "HEAD": self.list, "POST": self.load}
        name = parts[2]
        if not name:
            return None
        if len(parts) == 3:
            return {
                "GET": lambda call: self.describe(call, name),
                "HEAD": lambda call: self.describe(call, name),
                "DELETE": lambda call: self.unload(call, name),
            }
        if len(parts) == 4 and parts[3] == "invoke":
            return {"POST": lambda call: self.invoke(call, name)}
        return None

    def load(self, call: Call) -> Reply:
        environ = call.environ
        declared = get_content_length(
            environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING")
        )
        call.body = body = RequestBody(
            environ["wsgi.input"], declared, self._load_limits, None, environ.get("gunicorn.socket")
        )
        request = _json_object(body.whole())
        name, url = request.get("model_name"), request.get("url")
        if not isinstance(name, str) or not isinstance(url, str):
            raise InvalidInput('a load takes {"model_name": "<name>", "url": "<model directory>"}')
        return _json(_described(name, self.registry.load(name, url)))

    def list(self, call: Call) -> Reply:
        query = parse_qs(call.environ.get("QUERY_STRING", ""))
        token = query.get("next_page_token", [None])[-1]
        size = _page_size(query.get("max_results", [None])[-1])
        page, next_token = _page(self.registry.models(), token, size)
        answer: dict[str, Any] = {"models": [_listed(name, entry) for name, entry in page]}
        if next_token is not None:
            answer["nextPageToken"] = next_token
        return _json(answer)

    def describe(self, call: Call, name: str) -> Reply:
        return _json(_described(name, self.registry.describe(name)))

    def unload(self, call: Call, name: str) -> Reply:
        self.registry.unload(name)
        return _json({"status": f"model {name!r} unloaded"})

    def invoke(self, call: Call, name: str) -> Reply:
        with self.registry.serving(name) as state:
            return self._invoke(call, state)


def _page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise InvalidInput(f"invalid max_results {text!r}: a whole number from 1 to {MAX_PAGE}")
    return int(text)


def _page(
    models: list[tuple[str, Entry]], token: str | None, size: int
) -> tuple[list[tuple[str, Entry]], str | None]:
    """Of ``models`` (by name), ``size`` at most from where ``token`` says, and the token of
    the next page (``None``: this is the last). A token is the last name of its page."""
    after = ""
    if token:
        try:
            after = base64.b64decode(token, altchars=b"-_", validate=True).decode()
        except (ValueError, binascii.Error, UnicodeError):
            raise InvalidInput(f"invalid next_page_token {token!r}") from None
    rest = [(name, entry) for name, entry in models if name > after]
    page = rest[:size]
    if len(rest) <= size:
        return page, None
    return page, base64.urlsafe_b64encode(page[-1][0].encode()).decode()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the load request is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("the load request must be a JSON object")
    return value


def _listed(name: str, entry: Entry) -> dict[str, Any]:
    return {"modelName": name, "modelUrl": entry.url}


def _described(name: str, entry: Entry) -> dict[str, Any]:
    return {**_listed(name, entry), "footprintMB": round(entry.footprint / MIB, 1)}


def _json(value: dict[str, Any]) -> Reply:
    return Reply(HTTPStatus.OK, orjson.dumps(value), JSON)
