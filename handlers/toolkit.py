"""The AWS inference toolkit's conventions (sagemaker-inference 1.10 on Multi Model Server
1.1), adapted onto the handler contract, in one place.

What a script written for the toolkit relies on, and what it gets here:

- **Bodies**: ``input_fn`` and ``transform_fn`` get an ``application/json`` or ``text/csv`` body
  as ``str`` (UTF-8; invalid UTF-8 is a 400), any other as ``bytes`` (:func:`request_body`).
- **Defaults** once the model is the user's (``model_fn``) or the prediction is
  (``predict_fn``): the toolkit's decoder and encoder for JSON, CSV and ``.npy``
  (:func:`decode`, :func:`encode`): JSON is the bare JSON of the prediction, no wrapper.
- **Return values** of ``output_fn`` and ``transform_fn`` (:func:`reply`): bytes, str, a
  ``(body, content_type)`` tuple, or any JSON-serialisable object, written as JSON as MMS writes
  it (indented by 2), numpy values included.
- **Hooks** take an optional trailing ``context`` (:class:`Hook`); the context
  (:class:`ToolkitContext`) offers MMS's ``Context`` API, including the response's status and
  headers.
- **Errors**: an exception's ``status_code`` (the toolkit's ``GenericInferenceToolkitError``
  has one) becomes the response's status, its ``message`` the error message
  (:func:`hook_error`).

What the toolkit does and this does not, on purpose: tracebacks in response bodies, ``.npy``
bodies unpickled, a context passed positionally to a hook that takes ``**kwargs``.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .base import CUSTOM_ATTRIBUTES, Encoded, InvocationContext
from .errors import InvalidInput, ModelFailed, ModelLoadError, ServingError

log = logging.getLogger(__name__)

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
#: Bodies the toolkit hands to user code as text.
TEXT_TYPES = frozenset({JSON, CSV})
#: What the toolkit's default ``output_fn`` writes, in its order of preference.
ENCODABLE = (JSON, CSV, NPY)

#: Each hook and the number of arguments it takes before the optional ``context``.
HOOK_ARITY = {
    "pre_model_fn": 1,
    "model_fn": 1,
    "model_warmup_fn": 2,
    "input_fn": 2,
    "predict_fn": 2,
    "output_fn": 2,
    "transform_fn": 4,
}

SERVER_NAME = "sagemaker-onnx-serving"


@functools.cache
def _server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SERVER_NAME)
    except PackageNotFoundError:
        return "unknown"


class ToolkitContext:
    """The ``context`` argument: MMS's ``Context`` for one request (or for loading).

    ``system_properties`` has ``model_dir``, ``gpu_id`` (the worker's GPU, ``None`` on the CPU),
    ``batch_size`` (1), ``server_name`` and ``server_version``. ``get_request_header(idx, name)``
    (case-insensitive) and ``get_all_request_header(idx)`` read the request's headers;
    ``set_response_status(code, phrase)`` and ``set_response_header(idx, name, value)`` are
    honoured (headers the server owns, such as Content-Type, are ignored with a log line;
    the custom attributes header replaces the echoed one). ``idx`` is always 0: one request.
    """

    def __init__(
        self,
        model_dir: Path,
        invocation: InvocationContext | None = None,
        gpu_id: int | None = None,
    ) -> None:
        self.system_properties: dict[str, Any] = {
            "model_dir": str(model_dir),
            "gpu_id": gpu_id,
            "batch_size": 1,
            "server_name": SERVER_NAME,
            "server_version": _server_version(),
        }
        self.model_name = "model"
        self.invocation = invocation
        self._request_id: str | None = None

    def _request(self) -> InvocationContext:
        if self.invocation is None:
            raise RuntimeError("there is no request while the model loads")
        return self.invocation

    @property
    def custom_attributes(self) -> str | None:
        return self.invocation.custom_attributes if self.invocation else None

    @custom_attributes.setter
    def custom_attributes(self, value: str | None) -> None:
        self._request().custom_attributes = value

    @property
    def request_ids(self) -> dict[int, str]:
        return {0: self.get_request_id(0)}

    def get_request_id(self, idx: int = 0) -> str:
        if self._request_id is None:
            self._request_id = str(uuid.uuid4())
        return self._request_id

    def get_all_request_header(self, idx: int = 0) -> dict[str, str]:
        if self.invocation is None:
            return {}
        headers = dict(self.invocation.request_headers or {})
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = self.invocation.content_type
        if not any(name.lower() == "accept" for name in headers):
            headers["Accept"] = self.invocation.accept
        custom = self.invocation.custom_attributes
        named = {name.lower() for name in headers}
        if custom is not None and CUSTOM_ATTRIBUTES.lower() not in named:
            headers[CUSTOM_ATTRIBUTES] = custom
        return headers

    def get_request_header(self, idx: int, key: str) -> str | None:
        wanted = key.lower()
        for name, value in self.get_all_request_header(idx).items():
            if name.lower() == wanted:
                return value
        return None

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self._request().response_status = code

    def get_response_status(self, idx: int = 0) -> tuple[int, str]:
        code = self._request().response_status or HTTPStatus.OK
        return code, ""

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        request = self._request()
        if isinstance(key, str) and key.lower() == CUSTOM_ATTRIBUTES.lower():
            request.custom_attributes = value
            return
        if request.response_headers is None:
            request.response_headers = {}
        request.response_headers[key] = value

    def get_response_headers(self, idx: int = 0) -> dict[str, str]:
        return dict(self._request().response_headers or {})

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "Content-Type", value)


@dataclass(frozen=True)
class Hook:
    """One user function, called with the context appended when it declares one more
    positional parameter than the hook's arguments (or ``*args``), or passed as ``context=``
    when it has a keyword-only ``context``. A hook that takes ``**kwargs`` gets no context
    (the toolkit would pass it positionally, and the call fail)."""

    name: str
    function: Callable[..., Any]
    context_as: str | None  # "positional", "keyword" or None

    @classmethod
    def find(cls, module: ModuleType, name: str) -> Hook | None:
        function = getattr(module, name, None)
        if function is None:
            return None
        if not callable(function):
            raise ModelLoadError(f"{name} in {module.__file__} is not a function")
        return cls(name, function, _context_as(function, HOOK_ARITY[name]))

    def __call__(self, context: ToolkitContext, *arguments: Any) -> Any:
        try:
            if self.context_as == "positional":
                return self.function(*arguments, context)
            if self.context_as == "keyword":
                return self.function(*arguments, context=context)
            return self.function(*arguments)
        except ServingError:
            raise
        except Exception as exc:  # user code: any exception is the hook's failure
            raise hook_error(self.name, exc) from exc


def _context_as(function: Callable[..., Any], arity: int) -> str | None:
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # some callables have no signature: call them plainly
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) > arity or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return "positional"
    if any(p.kind is p.KEYWORD_ONLY and p.name == "context" for p in parameters):
        return "keyword"
    return None


def hook_error(hook: str, exc: Exception) -> ServingError:
    """The error a hook's exception answers with: its ``status_code`` (400-599) or 500, and
    ``"<hook> raised <Exception>: <message>"``, never a traceback."""
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code <= 599:
        try:
            status = HTTPStatus(code)
        except ValueError:  # a code http.HTTPStatus does not name
            status = HTTPStatus.INTERNAL_SERVER_ERROR
    message = getattr(exc, "message", None)
    if not isinstance(message, str):
        message = str(exc)
    return ServingError(f"{hook} raised {type(exc).__name__}: {message}", status=status)


def request_body(body: bytes, content_type: str) -> str | bytes:
    """The body as the toolkit passes it to ``input_fn``/``transform_fn``: text for JSON and
    CSV, bytes for anything else."""
    if content_type not in TEXT_TYPES:
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"a {content_type} body must be UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def decode(body: str | bytes, content_type: str) -> Any:
    """The toolkit's default ``input_fn`` for JSON, CSV and ``.npy``: what ``np.array`` makes
    of the JSON, ``np.genfromtxt`` of the CSV, ``np.load`` of the ``.npy`` (never unpickled)."""
    try:
        if content_type == JSON:
            return np.array(json.loads(body))
        if content_type == CSV:
            text = body.decode() if isinstance(body, bytes) else body
            return np.genfromtxt(io.StringIO(text), delimiter=",")
        if content_type == NPY:
            data = body.encode() if isinstance(body, str) else body
            return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise InvalidInput(f"cannot read the {content_type} body: {exc}") from None
    raise ValueError(f"the toolkit has no decoder for {content_type}")


def _tolist(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(prediction: Any, accept: str) -> bytes:
    """The toolkit's default ``output_fn``: JSON as ``json.dumps`` (arrays as lists), CSV as
    ``np.savetxt(delimiter=",", fmt="%s")``, ``.npy`` as ``np.save`` (object arrays refused,
    not pickled)."""
    try:
        if accept == JSON:
            return json.dumps(prediction, default=_tolist).encode()
        if accept == CSV:
            stream = io.StringIO()
            np.savetxt(stream, prediction, delimiter=",", fmt="%s")
            return stream.getvalue().encode()
        if accept == NPY:
            buffer = io.BytesIO()
            np.save(buffer, prediction, allow_pickle=False)
            return buffer.getvalue()
    except (TypeError, ValueError) as exc:
        raise ModelFailed(f"the prediction cannot be written as {accept}: {exc}") from None
    raise ValueError(f"the toolkit has no encoder for {accept}")


def reply(hook: str, result: Any, accept: str) -> Encoded:
    """What ``output_fn``/``transform_fn`` returned, as a response: bytes and str as they are,
    ``(body, content_type)`` with that type, anything else as MMS writes it (JSON, indented by
    2; numpy values as lists and numbers). Without a type, the negotiated Accept type."""
    body, media_type = result, accept
    if isinstance(result, tuple):  # the toolkit takes any tuple's first two items
        if len(result) < 2:
            raise ModelFailed(f"{hook} returned a tuple of {len(result)}: (body, content_type)")
        body, media_type = result[0], result[1]
    if not isinstance(media_type, str):
        raise ModelFailed(f"{hook} returned a content type of {type(media_type).__name__}")
    if isinstance(body, str):
        return Encoded(body.encode(), media_type)
    if isinstance(body, bytes | bytearray | memoryview):
        return Encoded(bytes(body), media_type)
    try:
        return Encoded(json.dumps(body, indent=2, default=_tolist).encode(), media_type)
    except (TypeError, ValueError) as exc:
        raise ModelFailed(
            f"{hook} returned {type(body).__name__}, which is neither bytes, str nor JSON: {exc}"
        ) from None
